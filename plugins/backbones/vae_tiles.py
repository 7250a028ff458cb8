"""diffusers' own VAE tiling, switched on for the images a backbone denoises in tiles."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def vae_tiles(vae: Any, on: bool, tile: int, vae_scale: int) -> Iterator[None]:
    """Within the block, ``vae`` (an ``AutoencoderKL``) encodes and decodes an image larger than
    one tile tile by tile, blending the seams — when ``on``: for images that are denoised in
    tiles, whose whole-image VAE pass would need the memory tiling saves. Its tiles are the
    denoising tiles (``tile`` output pixels) or its own, whichever is larger: every tile
    normalises on its own statistics, so fewer tiles keep it closer to the whole-image pass."""
    if not on or vae.use_tiling:
        yield
        return
    sizes = (vae.tile_sample_min_size, vae.tile_latent_min_size)
    vae.tile_sample_min_size = max(tile, sizes[0])
    vae.tile_latent_min_size = vae.tile_sample_min_size // vae_scale
    vae.enable_tiling()
    try:
        yield
    finally:
        vae.disable_tiling()
        vae.tile_sample_min_size, vae.tile_latent_min_size = sizes
