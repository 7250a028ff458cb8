"""The first-order Real-ESRGAN degradation, step for step as ResShift configures it.

ResShift (and DP²O-SR, which takes its LR images from it) runs Real-ESRGAN's pipeline with
the second order switched off. For each image, with its own generator seeded by its seed:

1. blur — a kernel of odd size drawn from 3, 5, …, ``kernel_size`` − 2, zero-padded to
   ``kernel_size`` × ``kernel_size`` (13): a circular low-pass (sinc) filter with
   probability ``sinc_prob`` (cutoff in [π/3, π], or [π/5, π] for sizes of 13 and more),
   else an isotropic (share ``iso_prob``) or anisotropic Gaussian with σ in ``blur_sigma``
   and an angle in [−π, π];
2. resize — up, down or keep (``resize_prob``) by a scale factor in ``resize_range``
   (``F.interpolate(scale_factor=…)``: output size ⌊h·f⌋), with area, bilinear or bicubic
   interpolation;
3. noise — Gaussian with probability ``gaussian_noise_prob`` (σ in ``noise_range`` on the
   0–255 scale), else Poisson (scale in ``poisson_scale_range``); with probability
   ``gray_noise_prob`` the noise is the same on every channel (for Poisson: drawn on the
   BT.601 luminance); clipped to [0, 1];
4. JPEG with quality in ``jpeg_range`` (70–95);
5. in random order (even odds): JPEG with quality in ``final_jpeg_range`` (80–100), and
   resizing to HR/scale followed by the final filter — with probability
   ``final_sinc_prob`` a sinc of size 3 or 5 (odd sizes below ``final_kernel_size``) with
   cutoff in [π/3, π], zero-padded to ``final_kernel_size`` (7), else the identity;
6. clamp and round to 8-bit levels.

Every random choice of an image is drawn first (:func:`draw`, a :class:`Draw`), then
applied (:func:`apply`), so each step can be checked against its definition. JPEG is the
real codec (libjpeg through Pillow) at the drawn quality rounded to an integer, where
ResShift uses a differentiable approximation that takes fractional qualities. Blurring
runs batched; steps whose output size depends on the image's own draw run per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dp2o_plugins.degradations.bicubic import quantise
from dp2o_plugins.degradations.kernels import (
    filter_images,
    gaussian_kernel,
    pad_kernel,
    pulse_kernel,
    sinc_kernel,
    uniform,
)
from pydantic import Field, field_validator

from dp2o_core import Degradation, PluginOptions

RESIZE_MODES = ("area", "bilinear", "bicubic")
#: Weights of the BT.601 luminance (as torchvision's rgb_to_grayscale) for grey Poisson noise.
LUMINANCE = (0.2989, 0.587, 0.114)


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
    """Parameters of the first-order pipeline; defaults are ResShift's first order."""

    kernel_size: int = Field(
        13, ge=5, le=31, description="Side the first blur kernel is padded to; its size is odd, 3 … this − 2."
    )
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
    jpeg_range: tuple[int, int] = Field(
        (70, 95), description="Range of the quality (1–100) of the JPEG step after the noise."
    )
    final_jpeg_range: tuple[int, int] = Field(
        (80, 100), description="Range of the quality (1–100) of the final JPEG step."
    )
    final_sinc_prob: float = Field(0.2, ge=0, le=1, description="Probability of the final sinc filter.")
    final_kernel_size: int = Field(
        7, ge=5, le=31, description="Side the final filter is padded to; sinc sizes are odd, 3 … this − 2."
    )

    @field_validator("kernel_size", "final_kernel_size")
    @classmethod
    def _odd(cls, value: int, info) -> int:
        if value % 2 == 0:
            raise ValueError(f"{info.field_name} must be odd")
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
    _jpeg = field_validator("jpeg_range", "final_jpeg_range")(classmethod(lambda cls, v: _range(1, 100)(v)))


@dataclass(frozen=True)
class Kernel:
    """A drawn blur kernel: ``kind`` ``gaussian``, ``sinc`` or ``pulse`` of odd ``size``."""

    kind: str
    size: int
    sigma_x: float = 0.0
    sigma_y: float = 0.0
    theta: float = 0.0
    cutoff: float = 0.0

    def build(self, padded_to: int):
        """The kernel as a ``padded_to`` × ``padded_to`` float64 tensor (zero-padded)."""
        if self.kind == "pulse":
            return pulse_kernel(padded_to)
        if self.kind == "sinc":
            kernel = sinc_kernel(self.size, self.cutoff)
        else:
            kernel = gaussian_kernel(self.size, self.sigma_x, self.sigma_y, self.theta)
        return pad_kernel(kernel, padded_to)


@dataclass(frozen=True)
class Draw:
    """Every random choice the pipeline makes for one image (the noise itself aside)."""

    blur: Kernel
    resize_factor: float
    resize_mode: str
    gray_noise: bool
    gaussian_noise: bool
    noise_sigma: float  #: on the 0–255 scale (Gaussian)
    poisson_scale: float
    jpeg_quality: int
    final_resize_first: bool
    final_resize_mode: str
    final_filter: Kernel
    final_jpeg_quality: int


def draw(options: RealEsrganOptions, generator) -> Draw:
    """Draw one image's choices, in pipeline order, from ``generator``."""
    o = options
    sizes = list(range(3, o.kernel_size, 2))
    size = sizes[_index(generator, len(sizes))]
    if uniform(generator, 0, 1) < o.sinc_prob:
        low = math.pi / 3 if size < 13 else math.pi / 5
        blur = Kernel("sinc", size, cutoff=uniform(generator, low, math.pi))
    elif uniform(generator, 0, 1) < o.iso_prob:
        sigma = uniform(generator, *o.blur_sigma)
        blur = Kernel("gaussian", size, sigma, sigma, 0.0)
    else:
        blur = Kernel(
            "gaussian",
            size,
            uniform(generator, *o.blur_sigma),
            uniform(generator, *o.blur_sigma),
            uniform(generator, -math.pi, math.pi),
        )
    direction = uniform(generator, 0, 1)
    if direction < o.resize_prob[0]:
        factor = uniform(generator, 1.0, max(1.0, o.resize_range[1]))
    elif direction < o.resize_prob[0] + o.resize_prob[1]:
        factor = uniform(generator, min(1.0, o.resize_range[0]), 1.0)
    else:
        factor = 1.0
    resize_mode = RESIZE_MODES[_index(generator, len(RESIZE_MODES))]
    gaussian = uniform(generator, 0, 1) < o.gaussian_noise_prob
    sigma = uniform(generator, *o.noise_range) if gaussian else 0.0
    poisson_scale = 0.0 if gaussian else uniform(generator, *o.poisson_scale_range)
    gray = uniform(generator, 0, 1) < o.gray_noise_prob
    quality = round(uniform(generator, *o.jpeg_range))
    resize_first = uniform(generator, 0, 1) < 0.5
    final_mode = RESIZE_MODES[_index(generator, len(RESIZE_MODES))]
    if uniform(generator, 0, 1) < o.final_sinc_prob:
        final_sizes = list(range(3, o.final_kernel_size, 2))
        final_size = final_sizes[_index(generator, len(final_sizes))]
        final_filter = Kernel("sinc", final_size, cutoff=uniform(generator, math.pi / 3, math.pi))
    else:
        final_filter = Kernel("pulse", o.final_kernel_size)
    final_quality = round(uniform(generator, *o.final_jpeg_range))
    return Draw(
        blur=blur,
        resize_factor=factor,
        resize_mode=resize_mode,
        gray_noise=gray,
        gaussian_noise=gaussian,
        noise_sigma=sigma,
        poisson_scale=poisson_scale,
        jpeg_quality=quality,
        final_resize_first=resize_first,
        final_resize_mode=final_mode,
        final_filter=final_filter,
        final_jpeg_quality=final_quality,
    )


class RealEsrganDegradation(Degradation):
    """First-order Real-ESRGAN degradation as ResShift configures it: blur, resize, noise, JPEG,
    final resize + sinc and JPEG."""

    name = "realesrgan"
    Options = RealEsrganOptions

    def degrade(self, hr, seeds: Sequence[int], scale: int):
        """Degrade each HR image with its own seed and resize it to HR/scale."""
        import torch

        if hr.shape[0] != len(seeds):
            raise ValueError(f"{hr.shape[0]} images but {len(seeds)} seeds")
        generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        draws = [draw(self.options, g) for g in generators]
        target = (hr.shape[-2] // scale, hr.shape[-1] // scale)
        kernels = torch.stack([d.blur.build(self.options.kernel_size) for d in draws])
        blurred = filter_images(hr.float(), kernels)
        return torch.cat(
            [
                apply(blurred[i : i + 1], d, g, target, self.options.final_kernel_size)
                for i, (d, g) in enumerate(zip(draws, generators, strict=True))
            ]
        )


def apply(blurred, choice: Draw, generator, target: tuple[int, int], final_kernel_size: int):
    """Steps 2–6 on one blurred image (1×3×H×W in [0, 1]); the noise comes from ``generator``."""
    image = resize(blurred, choice.resize_factor, choice.resize_mode)
    image = add_noise(image, choice, generator)
    image = jpeg(image, choice.jpeg_quality)
    final_filter = choice.final_filter.build(final_kernel_size)

    def resize_and_filter(x):
        return filter_images(_interpolate(x, size=target, mode=choice.final_resize_mode), final_filter[None])

    if choice.final_resize_first:
        image = jpeg(resize_and_filter(image), choice.final_jpeg_quality)
    else:
        image = resize_and_filter(jpeg(image, choice.final_jpeg_quality))
    return quantise(image)


def resize(image, factor: float, mode: str):
    """Step 2: scale-factor resizing (output ⌊h·f⌋ × ⌊w·f⌋); a factor of 1 keeps the image."""
    if factor == 1.0:
        return image
    return _interpolate(image, scale_factor=factor, mode=mode)


def add_noise(image, choice: Draw, generator):
    """Step 3: Gaussian or Poisson noise (grey: equal on all channels), clipped to [0, 1]."""
    import torch

    if choice.gaussian_noise:
        sigma = choice.noise_sigma / 255.0
        shape = (image.shape[0], 1, *image.shape[-2:]) if choice.gray_noise else image.shape
        noise = torch.randn(shape, generator=generator) * sigma
    else:
        noise = poisson_noise(image, choice.gray_noise, generator) * choice.poisson_scale
    return (image + noise).clamp(0, 1)


def poisson_noise(image, gray: bool, generator):
    """Unscaled Poisson (shot) noise at the image's own number of distinct 8-bit levels,
    rounded up to a power of two; grey noise is drawn on the BT.601 luminance."""
    import torch

    if gray:
        weights = torch.tensor(LUMINANCE, dtype=image.dtype).view(1, 3, 1, 1)
        source = (image * weights).sum(dim=1, keepdim=True)
    else:
        source = image
    levels = torch.clamp((source * 255.0).round(), 0, 255) / 255.0
    values = 2 ** math.ceil(math.log2(len(torch.unique(levels))))
    noisy = torch.poisson(levels * values, generator=generator) / values
    return (noisy - levels).expand_as(image)


def jpeg(image, quality: int):
    """Steps 4 and 5: clamp, compress and decompress with libjpeg (Pillow) at ``quality``."""
    import io

    import numpy as np
    import torch
    from PIL import Image

    data = (image[0].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(data).save(buffer, format="JPEG", quality=int(quality))
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).float().unsqueeze(0) / 255.0


def _interpolate(image, *, mode: str, size=None, scale_factor=None):
    import torch.nn.functional as F

    corners = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(image, size=size, scale_factor=scale_factor, mode=mode, **corners)


def _index(generator, count: int) -> int:
    """A uniform draw from 0 … count − 1."""
    return min(int(uniform(generator, 0, count)), count - 1)
