"""The DP²O-SR authors' input geometry: how their inference scripts turn an LR image of any
size into the control image the networks work on, and their result into the output.

For an LR of w × h, scale s and ``process_size`` P (their 512): an LR with a side below P // s
is first enlarged by Pillow's bicubic so that its short side is P // s (sides truncated to
integers); then enlarged ×s; then resized to sides rounded down to the networks' grid (8 for
SD2; 16 for FLUX, whose latents are packed 2×2). That 8-bit image is the control image and
the size the networks denoise at — the *working size*. The result, colour-fixed against the
control image, is resized back to exactly s·w × s·h. Every resize is Pillow's bicubic on 8-bit
RGB, as ``Image.resize`` does in their scripts; where the working size is s·w × s·h already
(an LR of P // s or more whose ×s sides are on the grid: the paper's 128 → 512 crops) nothing
is resampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dp2o_core.imageio import resize_pillow

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class AuthorsGeometry:
    """The geometry for one backbone: its ``scale``, ``process_size`` and grid ``multiple``."""

    scale: int
    process_size: int
    multiple: int

    def enlarged(self, height: int, width: int) -> tuple[int, int]:
        """An LR's size after the scripts' first resize: unchanged unless a side is below
        ``process_size // scale``; else the short side becomes that (both sides truncated)."""
        floor = self.process_size // self.scale
        if height >= floor and width >= floor:
            return height, width
        factor = floor / min(height, width)
        return int(factor * height), int(factor * width)

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """The control image's height and width for an LR of ``height`` × ``width``."""
        h, w = self.enlarged(height, width)
        m = self.multiple
        return max(m, h * self.scale // m * m), max(m, w * self.scale // m * m)

    def control_images(self, lr: torch.Tensor) -> torch.Tensor:
        """The control images of LR images (N×3×h×w in [0, 1]), in [0, 1] at the working size:
        the scripts' three Pillow resizes of the 8-bit LR (one that keeps the size is a copy)."""
        height, width = lr.shape[-2:]
        first = self.enlarged(height, width)
        enlarged = resize_pillow(lr, *first)
        scaled = resize_pillow(enlarged, first[0] * self.scale, first[1] * self.scale)
        return resize_pillow(scaled, *self.working_size(height, width))

    def working_images(self, images: torch.Tensor) -> torch.Tensor:
        """Output-sized images (N×3×(s·h)×(s·w)) at the working size of their LR — how a
        candidate or an HR image is encoded for training, so that its latents fit the control
        image's — or the same tensor where the sizes agree."""
        height, width = images.shape[-2] // self.scale, images.shape[-1] // self.scale
        return resize_pillow(images, *self.working_size(height, width))
