"""Built-in rewards: any pyiqa metric, the paper's hybrid reward, and its offline preset."""

from dp2o_plugins.rewards.hybrid import HybridReward, OfflineHybridReward
from dp2o_plugins.rewards.pyiqa_metric import PyiqaReward

from dp2o_core import hookimpl


@hookimpl
def register_rewards(register):
    """Register ``pyiqa`` (alias ``iqa``), ``hybrid`` and ``hybrid-offline``."""
    register(PyiqaReward, aliases=("iqa",))
    register(HybridReward)
    register(OfflineHybridReward)
