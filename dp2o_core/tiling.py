"""Tiled denoising for images larger than a model's training size.

A diffusion SR model sees at each step the whole latent; for a full-size photo that is more
memory than any device has (attention grows with the square of the token count) and a
context larger than the model was trained on. Tools people use on real photos (StableSR,
SeeSR, DiffBIR, OSEDiff) instead cut the latent into overlapping tiles, run the model on
each, and blend the tiles' outputs with Gaussian weights — heaviest at a tile's centre,
light at its edges — at every step, so seams never form: every step sees a model output
that is smooth across tile borders, and the noise each candidate draws (its generator's
initial latent and per-step noise) is that of the whole image, exactly as untiled.

:func:`plan_windows` places the tiles (:func:`plan_model_windows` from a backbone's options in
output pixels), :func:`blend_tiles` runs a model on each and blends.
A backbone's ``tile`` and ``overlap`` options (in output pixels) choose the tile size; an
image that fits one tile is denoised exactly as before (one window, no blending).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class Window:
    """A rectangle of a tensor's last two dimensions."""

    top: int
    left: int
    height: int
    width: int

    def of(self, tensor: Any) -> Any:
        """The window's part of ``tensor`` (a view)."""
        return tensor[..., self.top : self.top + self.height, self.left : self.left + self.width]

    def scaled(self, factor: int) -> Window:
        """The same window at ``factor`` × the resolution (a latent window → its pixels)."""
        return Window(self.top * factor, self.left * factor, self.height * factor, self.width * factor)


def plan_windows(height: int, width: int, tile: int, overlap: int, multiple: int = 1) -> list[Window]:
    """Windows of at most ``tile`` × ``tile`` covering ``height`` × ``width``, neighbours
    overlapping by at least ``overlap``, spread evenly (the last one flush with the edge);
    starts are multiples of ``multiple`` (a model's size grid). One window, the whole area,
    when it fits in one tile or ``tile`` is 0 (tiling off)."""
    if tile <= 0 or (height <= tile and width <= tile):
        return [Window(0, 0, height, width)]
    if overlap >= tile:
        raise ValueError(f"the tile overlap ({overlap}) must be smaller than the tile ({tile})")
    rows = _starts(height, tile, overlap, multiple)
    columns = _starts(width, tile, overlap, multiple)
    return [
        Window(top, left, min(tile, height - top), min(tile, width - left))
        for top in rows
        for left in columns
    ]


def plan_model_windows(
    height: int, width: int, tile: int, overlap: int, *, pixels_per_unit: int = 1, grid: int = 1
) -> list[Window]:
    """:func:`plan_windows` over a model's input (latents, or pixels for a pixel-space model) of
    ``height`` × ``width`` units, each ``pixels_per_unit`` output pixels across, for ``tile`` and
    ``overlap`` given in output pixels (a backbone's options): the tile is whole ``grid`` steps
    (what the network's downsampling needs), the overlap rounded up to them."""
    step = pixels_per_unit * grid
    return plan_windows(height, width, tile // step * grid, -(-overlap // step) * grid, multiple=grid)


def _starts(size: int, tile: int, overlap: int, multiple: int) -> list[int]:
    """Start positions of the tiles along one axis."""
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    last = size - tile
    starts = [round(index * last / (count - 1)) // multiple * multiple for index in range(count)]
    starts[-1] = last  # flush with the edge (the size itself is on the grid)
    return sorted(set(starts))


@lru_cache(maxsize=16)
def _profile(length: int) -> tuple[float, ...]:
    """A 1-D Gaussian over ``length`` positions, centred, standard deviation ``length`` / 4:
    the tile's centre counts about 3× its edges."""
    centre, sigma = (length - 1) / 2, max(length / 4, 1e-6)
    return tuple(math.exp(-0.5 * ((i - centre) / sigma) ** 2) for i in range(length))


def gaussian_weights(height: int, width: int, like: Any) -> Any:
    """The blending weights of one ``height`` × ``width`` tile (1×1×h×w, on ``like``'s device)."""
    import torch

    rows = torch.tensor(_profile(height), dtype=torch.float32, device=like.device)
    columns = torch.tensor(_profile(width), dtype=torch.float32, device=like.device)
    return (rows[:, None] * columns[None, :])[None, None]


def blend_tiles(model: Callable[[Window], Any], like: Any, windows: list[Window]) -> Any:
    """``model(window)`` — the model's output for that window of ``like`` (same leading
    dimensions) — for every window, blended with Gaussian weights into one tensor shaped like
    ``like``. With one window the model's output is returned as it is."""
    import torch

    if len(windows) == 1:
        return model(windows[0])
    total = torch.zeros(like.shape, dtype=torch.float32, device=like.device)
    weight = torch.zeros((1, 1, *like.shape[-2:]), dtype=torch.float32, device=like.device)
    for window in windows:
        g = gaussian_weights(window.height, window.width, like)
        window.of(total).add_(model(window).float() * g)
        window.of(weight).add_(g)
    return (total / weight).to(like.dtype)
