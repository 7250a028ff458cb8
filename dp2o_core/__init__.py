"""dp2o's core: the interfaces plugins implement, the plugin machinery, specs and config.

Plugin authors need a few names from here: an interface (:class:`Backbone`,
:class:`RewardModel`, :class:`PairSelector`, :class:`Weighting`, :class:`Dataset` or
:class:`Degradation`), :class:`PluginOptions` for their options (with
:func:`runtime_option` and :func:`training_option` for options that change no result) and
:data:`hookimpl` to mark their ``register_<kind>s`` hook. See docs/plugins.md. Importing this
package imports no torch.
"""

from dp2o_core.hookspecs import hookimpl
from dp2o_core.interfaces import (
    Backbone,
    DataItem,
    DataSample,
    Dataset,
    Degradation,
    GroupPairs,
    Implementation,
    MetricInfo,
    PairSelector,
    PairWeights,
    RewardModel,
    SampleResult,
    Weighting,
)
from dp2o_core.options import PluginOptions, runtime_option, training_option
from dp2o_core.registry import dp2o_version

__version__ = dp2o_version()

__all__ = [
    "Backbone",
    "DataItem",
    "DataSample",
    "Dataset",
    "Degradation",
    "GroupPairs",
    "Implementation",
    "MetricInfo",
    "PairSelector",
    "PairWeights",
    "PluginOptions",
    "RewardModel",
    "SampleResult",
    "Weighting",
    "__version__",
    "hookimpl",
    "runtime_option",
    "training_option",
]
