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
        FIXED.replace("noise_range=[0,0]", "noise_range=[10,10]") + ",gray_noise_prob=1,jpeg_range=[100,100]"
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
