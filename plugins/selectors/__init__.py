"""Built-in pair selectors (docs/method.md §3), registered through the ``register_selectors`` hook."""

from dp2o_plugins.selectors.ratio import BestWorstSelector, RatioSelector

from dp2o_core import hookimpl


@hookimpl
def register_selectors(register):
    """Register ``ratio`` and ``best-worst``."""
    register(RatioSelector)
    register(BestWorstSelector)
