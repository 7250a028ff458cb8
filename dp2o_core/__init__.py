"""dp2o's core: the interfaces plugins implement, the plugin machinery, specs and config.

Plugin authors need a few names from here: an interface (:class:`Backbone`,
:class:`RewardModel`, :class:`PairSelector`, :class:`Weighting`, :class:`Dataset`,
:class:`Degradation` or :class:`Prompter`), :class:`PluginOptions` for their options (with
:func:`runtime_option` and :func:`training_option` for options that change no result) and
:data:`hookimpl` to mark their ``register_<kind>s`` hook. See docs/plugins.md. Importing this
package imports no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        Prompter,
        RewardModel,
        SampleResult,
        Weighting,
    )
    from dp2o_core.options import PluginOptions, TiledSamplingOptions, runtime_option, training_option

    __version__: str


#: Public name → the module that defines it. The package imports them on first use (PEP 562), so
#: that ``import dp2o_core.errors`` — which the CLI's start-up needs — does not build every
#: interface and pydantic model.
_EXPORTS: dict[str, str] = {
    "hookimpl": "dp2o_core.hookspecs",
    "Backbone": "dp2o_core.interfaces",
    "DataItem": "dp2o_core.interfaces",
    "DataSample": "dp2o_core.interfaces",
    "Dataset": "dp2o_core.interfaces",
    "Degradation": "dp2o_core.interfaces",
    "GroupPairs": "dp2o_core.interfaces",
    "Implementation": "dp2o_core.interfaces",
    "MetricInfo": "dp2o_core.interfaces",
    "PairSelector": "dp2o_core.interfaces",
    "PairWeights": "dp2o_core.interfaces",
    "Prompter": "dp2o_core.interfaces",
    "RewardModel": "dp2o_core.interfaces",
    "SampleResult": "dp2o_core.interfaces",
    "Weighting": "dp2o_core.interfaces",
    "PluginOptions": "dp2o_core.options",
    "TiledSamplingOptions": "dp2o_core.options",
    "runtime_option": "dp2o_core.options",
    "training_option": "dp2o_core.options",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from dp2o_core.registry import dp2o_version

        return dp2o_version()
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dp2o_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
    "Prompter",
    "RewardModel",
    "SampleResult",
    "TiledSamplingOptions",
    "Weighting",
    "__version__",
    "hookimpl",
    "runtime_option",
    "training_option",
]
