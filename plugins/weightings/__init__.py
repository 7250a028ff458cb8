"""Built-in pair weightings: hierarchical (docs/method.md §4) and uniform."""

from dp2o_plugins.weightings.hierarchical import HierarchicalWeighting, UniformWeighting

from dp2o_core import hookimpl


@hookimpl
def register_weightings(register):
    """Register ``hierarchical`` and ``uniform``."""
    register(HierarchicalWeighting)
    register(UniformWeighting)
