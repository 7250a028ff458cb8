"""Top-N × bottom-N pair selection, per group and vectorised over blocks of groups."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction

from pydantic import Field, model_validator

from dp2o_core import PairSelector, PluginOptions
from dp2o_core.errors import Dp2oError
from dp2o_core.interfaces.selector import SelectedPairs


def rank_candidates(rewards: Sequence[float]) -> list[int]:
    """Candidate indices by reward descending, ties by index ascending (reproducible)."""
    for index, value in enumerate(rewards):
        if not math.isfinite(value):
            raise Dp2oError(f"candidate {index} has a non-finite reward ({value}); cannot rank the group")
    return sorted(range(len(rewards)), key=lambda i: (-rewards[i], i))


def cross_pairs(rewards: Sequence[float], n: int) -> list[tuple[int, int]]:
    """All n² (winner, loser) pairs between the top-n and the bottom-n of one group."""
    m = len(rewards)
    if m < 2:
        raise Dp2oError(f"a group needs at least two candidates to form pairs, got {m}")
    if 2 * n > m:
        raise Dp2oError(f"top-{n} and bottom-{n} need at least {2 * n} candidates per group, got {m}")
    order = rank_candidates(rewards)
    winners, losers = order[:n], order[m - n :]
    return [(w, loser) for w in winners for loser in losers]


def cross_pairs_block(rewards, offsets, size_to_n: Callable[[int], int]) -> SelectedPairs:
    """:func:`cross_pairs` for every group of a block at once (same pairs, same order)."""
    import numpy as np

    from dp2o_core.segments import by_size, descending_order, group_sizes

    bad = np.flatnonzero(~np.isfinite(rewards))
    if len(bad):
        group = int(np.searchsorted(offsets, bad[0], side="right")) - 1
        index = int(bad[0] - offsets[group])
        raise Dp2oError(
            f"candidate {index} has a non-finite reward ({rewards[bad[0]]}); cannot rank the group"
        )
    sizes = group_sizes(offsets)
    counts: np.ndarray = np.zeros(len(sizes), dtype=np.int64)
    plans = []
    for m, groups in by_size(offsets):
        n = size_to_n(m)
        if m < 2:
            raise Dp2oError(f"a group needs at least two candidates to form pairs, got {m}")
        if 2 * n > m:
            raise Dp2oError(f"top-{n} and bottom-{n} need at least {2 * n} candidates per group, got {m}")
        counts[groups] = n * n
        plans.append((m, n, groups))
    pair_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    winners: np.ndarray = np.empty(int(pair_offsets[-1]), dtype=np.int64)
    losers = np.empty_like(winners)
    for m, n, groups in plans:
        order = descending_order(rewards, groups, m, offsets)
        slots = pair_offsets[groups][:, None] + np.arange(n * n)
        winners[slots] = np.repeat(order[:, :n], n, axis=1)  # each winner against every loser
        losers[slots] = np.tile(order[:, m - n :], (1, n))
    return SelectedPairs(pair_offsets, winners, losers)


class RatioSelector(PairSelector):
    """Top-N × bottom-N of each group, N = max(1, floor(ratio · M)) or set directly."""

    name = "ratio"

    class Options(PluginOptions):
        ratio: float = Field(
            0.25,
            gt=0,
            le=0.5,
            description=(
                "Share N/M of the group kept as winners and as losers (paper: 1/4 for SD2, 1/16 for FLUX)."
            ),
        )
        n: int | None = Field(
            None, ge=1, description="Number of winners and of losers per group; overrides ratio."
        )
        alternatives = (("ratio", "n"),)  # --selector n=2 replaces a configured ratio

        @model_validator(mode="after")
        def _one_of_ratio_or_n(self):
            if self.n is not None and "ratio" in self.model_fields_set:
                raise ValueError("give either ratio or n, not both")
            return self

    def group_size(self, m: int) -> int:
        """N for a group of ``m`` candidates."""
        if self.options.n is not None:
            return self.options.n
        return max(1, math.floor(Fraction(repr(self.options.ratio)) * m))

    def select(self, rewards: Sequence[float]) -> list[tuple[int, int]]:
        """The N² cross pairs of the top-N and bottom-N candidates."""
        return cross_pairs(rewards, self.group_size(len(rewards)))

    def select_block(self, rewards, offsets) -> SelectedPairs:
        """:meth:`select` for every group of a block, vectorised."""
        return cross_pairs_block(rewards, offsets, self.group_size)


class BestWorstSelector(PairSelector):
    """The single best-vs-worst pair of each group (N = 1)."""

    name = "best-worst"

    def select(self, rewards: Sequence[float]) -> list[tuple[int, int]]:
        """One pair: the highest-reward candidate over the lowest."""
        return cross_pairs(rewards, 1)

    def select_block(self, rewards, offsets) -> SelectedPairs:
        """:meth:`select` for every group of a block, vectorised."""
        return cross_pairs_block(rewards, offsets, lambda m: 1)
