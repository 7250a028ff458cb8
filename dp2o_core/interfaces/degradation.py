"""The Degradation interface: how an LR input is synthesised from an HR image."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from dp2o_core.interfaces.base import Implementation

if TYPE_CHECKING:
    import torch


class Degradation(Implementation):
    """Turns a batch of HR images into LR images, deterministically per seed.

    ``hr`` is B×3×H×W float in [0, 1] with H and W multiples of ``scale``; the result is
    B×3×(H/scale)×(W/scale), quantised to 8-bit levels (as saved LR files are). Image ``b``
    is degraded with ``seeds[b]`` alone, so the batch it sits in never changes its LR.

    Example::

        from dp2o_core import Degradation, hookimpl

        class BoxDegradation(Degradation):
            \"\"\"Box-filter downsampling.\"\"\"

            name = "box"

            def degrade(self, hr, seeds, scale):
                import torch.nn.functional as F
                lr = F.avg_pool2d(hr, scale)
                return (lr * 255).round().clamp(0, 255) / 255

        @hookimpl
        def register_degradations(register):
            register(BoxDegradation)
    """

    kind: ClassVar[str] = "degradation"

    @abstractmethod
    def degrade(self, hr: torch.Tensor, seeds: Sequence[int], scale: int) -> torch.Tensor:
        """LR images for ``hr``, one seed per image."""
