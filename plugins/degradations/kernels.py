"""Blur kernels of the Real-ESRGAN degradation, drawn with an explicit torch generator."""

from __future__ import annotations

import math


def uniform(generator, low: float, high: float) -> float:
    """One draw from U[low, high) with ``generator``."""
    import torch

    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _grid(size: int):
    import torch

    half = (size - 1) / 2.0
    axis = torch.arange(size, dtype=torch.float64) - half
    return torch.meshgrid(axis, axis, indexing="ij")


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float):
    """Normalised (an)isotropic Gaussian kernel; ``theta`` rotates the main axis."""
    import torch

    y, x = _grid(size)
    cos, sin = math.cos(theta), math.sin(theta)
    u = cos * x + sin * y
    v = -sin * x + cos * y
    kernel = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return kernel / kernel.sum()


def sinc_kernel(size: int, cutoff: float):
    """Normalised circular low-pass (2-D sinc) kernel with angular cutoff ``cutoff`` (rad)."""
    import torch

    y, x = _grid(size)
    radius = torch.sqrt(x**2 + y**2)
    safe = torch.where(radius == 0, torch.ones_like(radius), radius)
    kernel = cutoff * torch.special.bessel_j1(cutoff * safe) / (2 * math.pi * safe)
    kernel = torch.where(radius == 0, torch.full_like(radius, cutoff**2 / (4 * math.pi)), kernel)
    return kernel / kernel.sum()


def pulse_kernel(size: int):
    """The identity kernel: filtering with it changes nothing."""
    import torch

    kernel = torch.zeros(size, size, dtype=torch.float64)
    kernel[size // 2, size // 2] = 1.0
    return kernel


def pad_kernel(kernel, size: int):
    """``kernel`` (odd side) zero-padded equally on every side to ``size`` × ``size``."""
    import torch.nn.functional as F

    pad = (size - kernel.shape[-1]) // 2
    if pad < 0:
        raise ValueError(f"a {kernel.shape[-1]}×{kernel.shape[-1]} kernel does not fit in {size}×{size}")
    return F.pad(kernel, (pad, pad, pad, pad)) if pad else kernel


def filter_images(images, kernels):
    """Filter each image (B×C×H×W) with its own kernel (B×k×k), reflect-padded, in one call."""
    import torch.nn.functional as F

    batch, channels, height, width = images.shape
    size = kernels.shape[-1]
    pad = size // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    weight = kernels.to(images.dtype).repeat_interleave(channels, dim=0).unsqueeze(1)
    out = F.conv2d(
        padded.reshape(1, batch * channels, height + 2 * pad, width + 2 * pad),
        weight,
        groups=batch * channels,
    )
    return out.reshape(batch, channels, height, width)
