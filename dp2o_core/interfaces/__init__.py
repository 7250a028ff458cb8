"""The seven extension points of dp2o (one per plugin kind), one module each."""

from dp2o_core.interfaces.backbone import Backbone, SampleResult
from dp2o_core.interfaces.base import Implementation
from dp2o_core.interfaces.dataset import DataItem, DataSample, Dataset
from dp2o_core.interfaces.degradation import Degradation
from dp2o_core.interfaces.prompter import Prompter
from dp2o_core.interfaces.reward import MetricInfo, RewardModel
from dp2o_core.interfaces.selector import PairSelector
from dp2o_core.interfaces.weighting import GroupPairs, PairWeights, Weighting

#: The interface class of each kind, keyed by kind name.
INTERFACES: dict[str, type[Implementation]] = {
    "backbone": Backbone,
    "reward": RewardModel,
    "selector": PairSelector,
    "weighting": Weighting,
    "dataset": Dataset,
    "degradation": Degradation,
    "prompter": Prompter,
}

__all__ = [
    "INTERFACES",
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
    "Prompter",
    "RewardModel",
    "SampleResult",
    "Weighting",
]
