"""Colour correction of SR outputs against the bicubic-upsampled LR (docs/method.md §7).

Diffusion SR drifts in colour; matching the output's colour statistics to the upsampled
LR corrects it. ``adain`` matches each channel's mean and standard deviation; ``wavelet``
keeps the output's high frequencies and takes the low frequencies from the LR. Both work as
the DP²O-SR authors' scripts apply them (StableSR's formulas): on the output as 8-bit image
against the 8-bit control image, the standard deviation as sqrt(unbiased variance + 1e-5),
the wavelet's low frequencies after five 3×3 binomial blurs dilated 1, 2, 4, 8, 16 with
replicated edges.
"""

from __future__ import annotations


def adain_color_fix(images, reference, eps: float = 1e-5):
    """Per-channel mean/std of ``images`` (N×3×H×W) matched to ``reference`` (1 or N ×3×H×W);
    std = sqrt(unbiased variance + eps)."""
    mean = images.mean(dim=(2, 3), keepdim=True)
    std = (images.var(dim=(2, 3), keepdim=True) + eps).sqrt()
    ref_mean = reference.mean(dim=(2, 3), keepdim=True)
    ref_std = (reference.var(dim=(2, 3), keepdim=True) + eps).sqrt()
    return ((images - mean) / std * ref_std + ref_mean).clamp(0, 1)


def _blur(images, radius: int):
    import torch
    import torch.nn.functional as F

    kernel = torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=images.dtype, device=images.device) / 16
    kernel = kernel.expand(images.shape[1], 1, 3, 3)
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(padded, kernel, groups=images.shape[1], dilation=radius)


def _low_frequency(images, levels: int = 5):
    low = images
    for level in range(levels):
        low = _blur(low, 2**level)
    return low


def wavelet_color_fix(images, reference):
    """High frequencies of ``images`` plus low frequencies of ``reference`` (à trous wavelet)."""
    high = images - _low_frequency(images)
    return (high + _low_frequency(reference.expand_as(images))).clamp(0, 1)


def to_8bit(images):
    """Images in [0, 1] rounded to the 256 levels of an 8-bit image (as a pipeline's PIL output)."""
    return (images.clamp(0, 1) * 255).round() / 255


def color_fix(images, reference, method: str):
    """Apply ``method`` ('adain', 'wavelet' or 'none') to the images as 8-bit images, the way
    the authors' scripts fix the pipeline's PIL output ('none' leaves them as they are)."""
    if method == "adain":
        return adain_color_fix(to_8bit(images), reference)
    if method == "wavelet":
        return wavelet_color_fix(to_8bit(images), reference)
    return images
