"""Built-in rewards: any pyiqa metric, the paper's hybrid reward, its offline preset, and VQ-R1."""

from dp2o_plugins.rewards.hybrid import HybridReward, OfflineHybridReward
from dp2o_plugins.rewards.pyiqa_metric import PyiqaReward
from dp2o_plugins.rewards.vqr1 import VisualQualityR1

from dp2o_core import hookimpl


@hookimpl
def register_rewards(register):
    """Register ``pyiqa`` (alias ``iqa``), ``hybrid``, ``hybrid-offline`` and ``vqr1``."""
    register(PyiqaReward, aliases=("iqa",))
    register(HybridReward)
    register(OfflineHybridReward)
    register(VisualQualityR1, aliases=("visualquality-r1",))
