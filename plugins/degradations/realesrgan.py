"""The first-order Real-ESRGAN degradation (as used by ResShift and by DP²O-SR's data).

For each image, with its own generator seeded by its seed:

1. blur — a 13×13 kernel: sinc with probability ``sinc_prob``, else isotropic (share
   ``iso_prob``) or anisotropic Gaussian with σ in ``blur_sigma`` and a random angle;
2. resize — up, down or keep (``resize_prob``) by a factor in ``resize_range``, with
   area, bilinear or bicubic interpolation;
3. noise — Gaussian with probability ``gaussian_noise_prob`` (σ in ``noise_range``, on
   the 0–255 scale), else Poisson (scale in ``poisson_scale_range``); either is the same
   on all channels with probability ``gray_noise_prob``;
4. in random order (even odds): JPEG with quality in ``jpeg_range``, and resizing to
   HR/scale followed by a sinc filter with probability ``final_sinc_prob``;
5. clamp and round to 8-bit levels.

JPEG is the real codec (libjpeg through Pillow) at an integer quality, not a differentiable
approximation. Blurring and the final filter run batched; steps whose output size depends
on the image's own draw run per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from dp2o_plugins.degradations.bicubic import quantise
from dp2o_plugins.degradations.kernels import (
    filter_images,
    gaussian_kernel,
    pulse_kernel,
    sinc_kernel,
    uniform,
)
from pydantic import Field, field_validator

from dp2o_core import Degradation, PluginOptions

RESIZE_MODES = ("area", "bilinear", "bicubic")


def _range(low_bound: float, high_bound: float | None = None):
    def check(value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if low > high:
            raise ValueError(f"range [{low}, {high}] is reversed")
        if low < low_bound or (high_bound is not None and high > high_bound):
            upper = "∞" if high_bound is None else high_bound
            raise ValueError(f"range [{low}, {high}] must lie within [{low_bound}, {upper}]")
        return value

    return check


class RealEsrganOptions(PluginOptions):
    """Parameters of the first-order pipeline; defaults are the paper's (ResShift's first order)."""

    kernel_size: int = Field(13, ge=3, le=31, description="Side of the blur kernels (odd).")
    iso_prob: float = Field(0.6, ge=0, le=1, description="Share of Gaussian blurs that are isotropic.")
    sinc_prob: float = Field(0.1, ge=0, le=1, description="Probability that the first blur is a sinc filter.")
    blur_sigma: tuple[float, float] = Field((0.2, 0.8), description="Range of the Gaussian blur σ (pixels).")
    resize_prob: tuple[float, float, float] = Field(
        (0.2, 0.7, 0.1), description="Probabilities of resizing up, down, or keeping the size."
    )
    resize_range: tuple[float, float] = Field((0.5, 1.5), description="Range of the resize factor.")
    gaussian_noise_prob: float = Field(
        0.5, ge=0, le=1, description="Probability of Gaussian (else Poisson) noise."
    )
    noise_range: tuple[float, float] = Field(
        (1.0, 15.0), description="Range of Gaussian noise σ on the 0–255 scale."
    )
    poisson_scale_range: tuple[float, float] = Field(
        (0.05, 0.3), description="Range of the Poisson noise scale."
    )
    gray_noise_prob: float = Field(
        0.4, ge=0, le=1, description="Probability that noise is equal on all channels."
    )
    jpeg_range: tuple[int, int] = Field((70, 95), description="Range of JPEG quality (1–100).")
    final_sinc_prob: float = Field(0.2, ge=0, le=1, description="Probability of the final sinc filter.")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("kernel_size must be odd")
        return value

    @field_validator("resize_prob")
    @classmethod
    def _probabilities(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) < 0 or not math.isclose(sum(value), 1.0, abs_tol=1e-6):
            raise ValueError("resize_prob must be three non-negative numbers that sum to 1")
        return value

    _blur = field_validator("blur_sigma")(classmethod(lambda cls, v: _range(1e-3)(v)))
    _resize = field_validator("resize_range")(classmethod(lambda cls, v: _range(1e-3)(v)))
    _noise = field_validator("noise_range")(classmethod(lambda cls, v: _range(0)(v)))
    _poisson = field_validator("poisson_scale_range")(classmethod(lambda cls, v: _range(0)(v)))
    _jpeg = field_validator("jpeg_range")(classmethod(lambda cls, v: _range(1, 100)(v)))


class RealEsrganDegradation(Degradation):
    """First-order Real-ESRGAN degradation: blur, resize, noise, JPEG, final sinc (PAPER.md §1)."""

    name = "realesrgan"
    Options = RealEsrganOptions

    def degrade(self, hr, seeds: Sequence[int], scale: int):
        """Degrade each HR image with its own seed and resize it to HR/scale."""
        import torch

        if hr.shape[0] != len(seeds):
            raise ValueError(f"{hr.shape[0]} images but {len(seeds)} seeds")
        generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        target = (hr.shape[-2] // scale, hr.shape[-1] // scale)
        blurred = filter_images(hr.float(), torch.stack([self._first_kernel(g) for g in generators]))
        images = [self._resize_and_noise(blurred[i : i + 1], g) for i, g in enumerate(generators)]
        return torch.cat([self._final(image, g, target) for image, g in zip(images, generators, strict=True)])

    # -- steps --------------------------------------------------------------------------
    def _first_kernel(self, generator):
        o = self.options
        if uniform(generator, 0, 1) < o.sinc_prob:
            low = math.pi / 3 if o.kernel_size < 13 else math.pi / 5
            return sinc_kernel(o.kernel_size, uniform(generator, low, math.pi))
        isotropic = uniform(generator, 0, 1) < o.iso_prob
        sigma_x = uniform(generator, *o.blur_sigma)
        sigma_y = sigma_x if isotropic else uniform(generator, *o.blur_sigma)
        theta = 0.0 if isotropic else uniform(generator, -math.pi, math.pi)
        return gaussian_kernel(o.kernel_size, sigma_x, sigma_y, theta)

    def _resize_and_noise(self, image, generator):
        import torch
        import torch.nn.functional as F

        o = self.options
        draw = uniform(generator, 0, 1)
        if draw < o.resize_prob[0]:
            factor = uniform(generator, 1.0, max(1.0, o.resize_range[1]))
        elif draw < o.resize_prob[0] + o.resize_prob[1]:
            factor = uniform(generator, min(1.0, o.resize_range[0]), 1.0)
        else:
            factor = 1.0
        mode = RESIZE_MODES[int(uniform(generator, 0, len(RESIZE_MODES))) % len(RESIZE_MODES)]
        if factor != 1.0:
            size = (max(1, round(image.shape[-2] * factor)), max(1, round(image.shape[-1] * factor)))
            image = F.interpolate(image, size=size, mode=mode, **_corners(mode))
        gray = uniform(generator, 0, 1) < o.gray_noise_prob
        if uniform(generator, 0, 1) < o.gaussian_noise_prob:
            sigma = uniform(generator, *o.noise_range) / 255.0
            shape = (1, 1, *image.shape[-2:]) if gray else image.shape
            noise = torch.randn(shape, generator=generator) * sigma
        else:
            scale = uniform(generator, *o.poisson_scale_range)
            noise = _poisson_noise(image, gray, generator) * scale
        return (image + noise).clamp(0, 1)

    def _final(self, image, generator, target):
        import torch.nn.functional as F

        o = self.options
        quality = int(round(uniform(generator, o.jpeg_range[0], o.jpeg_range[1])))
        resize_first = uniform(generator, 0, 1) < 0.5
        mode = RESIZE_MODES[int(uniform(generator, 0, len(RESIZE_MODES))) % len(RESIZE_MODES)]
        if uniform(generator, 0, 1) < o.final_sinc_prob:
            kernel = sinc_kernel(o.kernel_size, uniform(generator, math.pi / 3, math.pi))
        else:
            kernel = pulse_kernel(o.kernel_size)

        def resize_and_filter(x):
            x = F.interpolate(x, size=target, mode=mode, **_corners(mode))
            return filter_images(x, kernel[None])

        if resize_first:
            image = _jpeg(resize_and_filter(image), quality)
        else:
            image = resize_and_filter(_jpeg(image, quality))
        return quantise(image)


def _corners(mode: str) -> dict:
    return {} if mode == "area" else {"align_corners": False}


def _poisson_noise(image, gray: bool, generator):
    """Poisson (shot) noise at the image's own number of distinct 8-bit levels."""
    import torch

    source = image.mean(dim=1, keepdim=True) if gray else image
    levels = torch.clamp((source * 255.0).round(), 0, 255) / 255.0
    distinct = len(torch.unique(levels))
    values = 2 ** math.ceil(math.log2(max(distinct, 2)))
    noisy = torch.poisson(levels * values, generator=generator) / values
    return noisy - levels


def _jpeg(image, quality: int):
    """Compress and decompress with libjpeg (via Pillow) at ``quality``; image is 1×3×H×W in [0, 1]."""
    import io

    import numpy as np
    import torch
    from PIL import Image

    data = (image[0].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(data).save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).float().unsqueeze(0) / 255.0
