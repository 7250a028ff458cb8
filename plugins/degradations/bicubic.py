"""Bicubic downsampling, the classic synthetic SR degradation."""

from __future__ import annotations

from collections.abc import Sequence

from dp2o_core import Degradation


def quantise(images):
    """Clamp to [0, 1] and round to 8-bit levels, as a saved image would be."""
    return (images.clamp(0, 1) * 255.0).round() / 255.0


class BicubicDegradation(Degradation):
    """Bicubic downsampling with antialiasing (no blur, noise or compression)."""

    name = "bicubic"

    def degrade(self, hr, seeds: Sequence[int], scale: int):
        """Downsample by ``scale``; seeds are not needed (the result is deterministic)."""
        import torch.nn.functional as F

        height, width = hr.shape[-2] // scale, hr.shape[-1] // scale
        lr = F.interpolate(hr, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        return quantise(lr)
