"""A complete third-party dp2o plugin: one pair selector registered through the ``dp2o`` entry point."""

from pydantic import Field

from dp2o_core import PairSelector, PluginOptions, hookimpl


class MedianSplitSelector(PairSelector):
    """Pairs every candidate above the median reward with every one below it."""

    name = "median-split"

    class Options(PluginOptions):
        max_pairs: int | None = Field(
            None, ge=1, description="Keep at most this many pairs (strongest first)."
        )

    def select(self, rewards):
        order = sorted(range(len(rewards)), key=lambda i: (-rewards[i], i))
        half = len(order) // 2
        winners, losers = order[:half], order[len(order) - half :]
        pairs = [(w, loser) for w in winners for loser in losers]
        pairs.sort(key=lambda p: -(rewards[p[0]] - rewards[p[1]]))
        return pairs[: self.options.max_pairs] if self.options.max_pairs else pairs


@hookimpl
def register_selectors(register):
    register(MedianSplitSelector, aliases=("median",))
