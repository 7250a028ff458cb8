"""The first-order Real-ESRGAN degradation and bicubic: determinism, shapes, parameter effects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from images import photo

from dp2o_core.errors import UsageError
from dp2o_core.specs import resolve_spec


@pytest.fixture(scope="module")
def hr() -> torch.Tensor:
    images = np.stack([photo(name, 96) for name in ("astronaut", "coffee", "chelsea")])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def degradation(manager, spec="realesrgan"):
    return resolve_spec(manager, "degradation", spec).build()


def test_same_seed_gives_identical_lr_and_batching_does_not_matter(dp2o_plugin_manager, hr):
    deg = degradation(dp2o_plugin_manager)
    first = deg.degrade(hr, [1, 2, 3], 4)
    again = deg.degrade(hr, [1, 2, 3], 4)
    alone = deg.degrade(hr[1:2], [2], 4)
    assert torch.equal(first, again)
    assert torch.equal(first[1:2], alone)


def test_different_seeds_give_different_lr(dp2o_plugin_manager, hr):
    deg = degradation(dp2o_plugin_manager)
    assert not torch.equal(deg.degrade(hr, [1, 2, 3], 4), deg.degrade(hr, [4, 5, 6], 4))


def test_shape_dtype_range_and_8bit_levels(dp2o_plugin_manager, hr):
    for spec in ("realesrgan", "bicubic"):
        lr = degradation(dp2o_plugin_manager, spec).degrade(hr, [7, 8, 9], 4)
        assert lr.shape == (3, 3, 24, 24)
        assert lr.dtype == torch.float32
        assert lr.min() >= 0 and lr.max() <= 1
        assert torch.allclose(lr * 255, (lr * 255).round(), atol=1e-4)


def test_bicubic_is_plain_antialiased_downsampling(dp2o_plugin_manager, hr):
    lr = degradation(dp2o_plugin_manager, "bicubic").degrade(hr, [0, 0, 0], 4)
    reference = torch.nn.functional.interpolate(hr, size=(24, 24), mode="bicubic", antialias=True)
    assert (lr - reference.clamp(0, 1)).abs().max() <= 0.5 / 255 + 1e-6


def _distance(manager, hr, a: str, b: str) -> float:
    lr_a = degradation(manager, a).degrade(hr, [11, 12, 13], 4)
    lr_b = degradation(manager, b).degrade(hr, [11, 12, 13], 4)
    return float((lr_a - lr_b).abs().mean())


# Each parameter is exercised where its branch is certain to run, then changed.
FIXED = "realesrgan:resize_prob=[0,0,1],sinc_prob=0,final_sinc_prob=0,gaussian_noise_prob=1,noise_range=[0,0]"


@pytest.mark.parametrize(
    ("base", "changed"),
    [
        (FIXED + ",jpeg_range=[95,95]", FIXED + ",jpeg_range=[30,30]"),
        (FIXED, FIXED.replace("noise_range=[0,0]", "noise_range=[20,20]")),
        (FIXED, FIXED.replace("gaussian_noise_prob=1,noise_range=[0,0]", "gaussian_noise_prob=0")),
        (FIXED + ",blur_sigma=[0.2,0.2]", FIXED + ",blur_sigma=[3,3]"),
        (FIXED, FIXED.replace("sinc_prob=0,", "sinc_prob=1,")),
        (FIXED, FIXED.replace("final_sinc_prob=0", "final_sinc_prob=1")),
        (FIXED, FIXED.replace("resize_prob=[0,0,1]", "resize_prob=[0,1,0]") + ",resize_range=[0.5,0.5]"),
        (FIXED + ",iso_prob=1,blur_sigma=[0.5,3]", FIXED + ",iso_prob=0,blur_sigma=[0.5,3]"),
        (FIXED + ",kernel_size=13,blur_sigma=[3,3]", FIXED + ",kernel_size=5,blur_sigma=[3,3]"),
    ],
    ids=["jpeg", "noise", "poisson", "blur-sigma", "sinc", "final-sinc", "resize", "iso", "kernel-size"],
)
def test_each_parameter_changes_the_output(dp2o_plugin_manager, hr, base, changed):
    assert _distance(dp2o_plugin_manager, hr, base, changed) > 1e-3


def test_gray_noise_is_equal_on_all_channels(dp2o_plugin_manager):
    flat = torch.full((1, 3, 64, 64), 0.5)
    spec = (
        FIXED.replace("noise_range=[0,0]", "noise_range=[10,10]")
        + ",gray_noise_prob=1,jpeg_range=[100,100],final_jpeg_range=[100,100]"
    )
    lr = degradation(dp2o_plugin_manager, spec).degrade(flat, [3], 4)
    assert (lr[:, 0] - lr[:, 1]).abs().max() < 2 / 255
    colour = degradation(dp2o_plugin_manager, spec.replace("gray_noise_prob=1", "gray_noise_prob=0")).degrade(
        flat, [3], 4
    )
    assert (colour[:, 0] - colour[:, 1]).abs().max() > 2 / 255


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("realesrgan:kernel_size=12", "kernel_size must be odd"),
        ("realesrgan:resize_prob=[0.5,0.5,0.5]", "sum to 1"),
        ("realesrgan:jpeg_range=[90,70]", "reversed"),
        ("realesrgan:jpeg_range=[0,90]", "within"),
        ("realesrgan:noise_level=3", "unknown option"),
    ],
)
def test_bad_parameters_are_usage_errors(dp2o_plugin_manager, spec, message):
    with pytest.raises(UsageError, match=message):
        degradation(dp2o_plugin_manager, spec)


# -- each step of the first-order pipeline against its definition (ResShift's first order) --------
def _options(**changes):
    from dp2o_plugins.degradations.realesrgan import RealEsrganOptions

    return RealEsrganOptions(**changes)


def _draws(count=3000, **changes):
    from dp2o_plugins.degradations.realesrgan import draw

    options = _options(**changes)
    return [draw(options, torch.Generator().manual_seed(seed)) for seed in range(count)]


def test_the_draws_follow_the_first_order_configuration():
    import math

    draws = _draws()
    blur = [d.blur for d in draws]
    assert {k.size for k in blur} == {3, 5, 7, 9, 11}  # odd sizes below 13, padded to 13
    sinc = [k for k in blur if k.kind == "sinc"]
    assert 0.08 < len(sinc) / len(draws) < 0.12
    assert all(math.pi / 3 <= k.cutoff <= math.pi for k in sinc)  # sizes < 13: never below π/3
    gaussian = [k for k in blur if k.kind == "gaussian"]
    assert all(0.2 <= k.sigma_x <= 0.8 and 0.2 <= k.sigma_y <= 0.8 for k in gaussian)
    isotropic = [k for k in gaussian if k.sigma_x == k.sigma_y and k.theta == 0]
    assert 0.55 < len(isotropic) / len(gaussian) < 0.65
    up = [d.resize_factor for d in draws if d.resize_factor > 1]
    down = [d.resize_factor for d in draws if d.resize_factor < 1]
    assert max(up) <= 1.5 and min(down) >= 0.5
    assert 0.17 < len(up) / len(draws) < 0.23 and 0.66 < len(down) / len(draws) < 0.74
    assert {d.resize_mode for d in draws} == {"area", "bilinear", "bicubic"}
    assert {d.jpeg_quality for d in draws} == set(range(70, 96))  # the JPEG step after the noise
    assert {d.final_jpeg_quality for d in draws} == set(range(80, 101))
    final = [d.final_filter for d in draws]
    final_sinc = [k for k in final if k.kind == "sinc"]
    assert 0.17 < len(final_sinc) / len(draws) < 0.23
    assert {k.size for k in final_sinc} == {3, 5} and all(
        math.pi / 3 <= k.cutoff <= math.pi for k in final_sinc
    )
    assert {k.size for k in final if k.kind == "pulse"} == {7}
    gaussian_noise = [d for d in draws if d.gaussian_noise]
    assert all(1 <= d.noise_sigma <= 15 for d in gaussian_noise)
    assert all(0.05 <= d.poisson_scale <= 0.3 for d in draws if not d.gaussian_noise)
    assert 0.37 < np.mean([d.gray_noise for d in draws]) < 0.43


def test_kernels_are_the_published_definitions_zero_padded():
    from dp2o_plugins.degradations.realesrgan import Kernel
    from scipy import special

    size, cutoff = 5, 2.0
    sinc = Kernel("sinc", size, cutoff=cutoff).build(13).numpy()
    assert sinc.shape == (13, 13) and np.isclose(sinc.sum(), 1)
    assert not sinc[:4].any() and not sinc[9:].any() and not sinc[:, :4].any() and not sinc[:, 9:].any()
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(x, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
    expected[size // 2, size // 2] = cutoff**2 / (4 * np.pi)
    assert np.allclose(sinc[4:9, 4:9], expected / expected.sum())

    sx, sy, theta = 0.7, 0.3, 0.9
    gauss = Kernel("gaussian", 7, sx, sy, theta).build(13).numpy()[3:10, 3:10]
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    inverse = np.linalg.inv(rotation @ np.diag([sx**2, sy**2]) @ rotation.T)
    y, x = np.mgrid[:7, :7] - 3
    xy = np.stack([x, y], -1)
    expected = np.exp(-0.5 * np.einsum("...i,ij,...j->...", xy, inverse, xy))
    assert np.allclose(gauss, expected / expected.sum())
    pulse = Kernel("pulse", 7).build(7).numpy()
    assert pulse[3, 3] == 1 and pulse.sum() == 1


def test_resize_uses_the_scale_factor_and_grey_poisson_noise_the_luminance():
    from dp2o_plugins.degradations.realesrgan import LUMINANCE, poisson_noise, resize

    image = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    out = resize(image, 0.77, "bicubic")
    assert out.shape[-2:] == (73, 73)  # ⌊96·0.77⌋, where round() would give 74
    reference = torch.nn.functional.interpolate(image, scale_factor=0.77, mode="bicubic", align_corners=False)
    assert torch.equal(out, reference)
    assert resize(image, 1.0, "area") is image

    colour = torch.zeros(1, 3, 32, 32)
    colour[:, 0] = torch.linspace(0, 1, 32)  # red ramp only: channel mean ≠ luminance
    noise = poisson_noise(colour, True, torch.Generator().manual_seed(5))
    assert torch.equal(noise[:, 0], noise[:, 1]) and torch.equal(noise[:, 1], noise[:, 2])
    luminance = colour[:, :1] * LUMINANCE[0]
    levels = (luminance * 255).round() / 255
    values = 2 ** int(np.ceil(np.log2(len(torch.unique(levels)))))
    expected = torch.poisson(levels * values, generator=torch.Generator().manual_seed(5)) / values - levels
    assert torch.equal(noise[:, :1], expected)


def test_the_pipeline_runs_its_steps_in_the_published_order():
    from dataclasses import replace

    from dp2o_plugins.degradations.bicubic import quantise
    from dp2o_plugins.degradations.kernels import filter_images
    from dp2o_plugins.degradations.realesrgan import add_noise, apply, draw, jpeg, resize

    image = torch.from_numpy(photo("astronaut", 64).copy()).permute(2, 0, 1)[None].float() / 255
    base = draw(_options(), torch.Generator().manual_seed(1))
    for resize_first in (True, False):
        choice = replace(base, final_resize_first=resize_first, resize_factor=0.8, resize_mode="bilinear")
        out = apply(image, choice, torch.Generator().manual_seed(9), (16, 16), 7)
        x = add_noise(resize(image, 0.8, "bilinear"), choice, torch.Generator().manual_seed(9))
        x = jpeg(x, choice.jpeg_quality)  # the JPEG step right after the noise

        def final(y, choice=choice):
            y = torch.nn.functional.interpolate(
                y,
                size=(16, 16),
                mode=choice.final_resize_mode,
                **({} if choice.final_resize_mode == "area" else {"align_corners": False}),
            )
            return filter_images(y, choice.final_filter.build(7)[None])

        q = choice.final_jpeg_quality
        expected = jpeg(final(x), q) if resize_first else final(jpeg(x, q))
        assert torch.equal(out, quantise(expected))
