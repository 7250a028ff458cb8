"""Any LR size gives exactly scale × its size, for sampling and for the training path, with
the latent backbones whose networks need sides on a grid (SD2: 8, FLUX: 16)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from tiny_models import save_tiny_flux, save_tiny_sd

from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec

SIZES = [(20, 33), (33, 20), (33, 21), (30, 22), (7, 5)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {"sd2": save_tiny_sd(folder / "sd"), "flux": save_tiny_flux(folder / "flux")}


@pytest.mark.parametrize("name", ["sd2", "flux"])
def test_odd_sizes_sample_and_train_at_exactly_scale_times_the_input(models, name):
    backbone = resolve_spec(
        PluginManager(), "backbone", f"{name}:model={models[name]},steps=2,device=cpu,geometry=exact"
    ).build()
    for height, width in SIZES:
        lr = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height * width))
        result = backbone.sample(lr, [[0, 1]])
        assert tuple(result.images.shape) == (1, 2, 3, 4 * height, 4 * width), (height, width)
        # the training path pads the candidate and the condition alike, so they fit each other
        x0 = backbone.encode(result.images[0, :1])
        assert torch.allclose(x0, result.latents[0, :1].to(x0), atol=1e-5)  # the latents sampling stored
        condition = {**backbone.encode_condition(lr), **backbone.encode_prompts([""])}
        t = backbone.sample_timesteps(1, generator=torch.Generator().manual_seed(0))
        x_t, target = backbone.noisy(x0, torch.randn_like(x0), t)
        assert backbone.predict(x_t, t, condition).shape == target.shape


@pytest.mark.parametrize("name", ["sd2", "flux"])
def test_upscale_of_a_folder_of_odd_sizes_writes_every_output_at_its_exact_size(
    dp2o_cli, models, tmp_path, name
):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for height, width in SIZES:
        Image.new("RGB", (width, height), (height * 3, width * 3, 90)).save(folder / f"{height}x{width}.png")
    spec = f"{name}:model={models[name]},steps=2,device=cpu,geometry=exact,controlnet=new"
    done = dp2o_cli("upscale", str(folder), str(tmp_path / "out"), "--backbone", spec)
    assert done.exit_code == 0, done.stderr
    for height, width in SIZES:
        with Image.open(tmp_path / "out" / f"{height}x{width}.png") as image:
            assert image.size == (4 * width, 4 * height)


def test_an_input_on_the_grid_is_sampled_exactly_as_before(models):
    """Padding is a no-op on sizes that fit (the stock-pipeline equality tests rely on it)."""
    spec = f"sd2:model={models['sd2']},device=cpu,geometry=exact"
    backbone = resolve_spec(PluginManager(), "backbone", spec).build()
    image = torch.rand(1, 3, 64, 48)
    assert backbone.pad_to_grid(image) is image
    padded = backbone.pad_to_grid(torch.rand(1, 3, 66, 50))
    assert padded.shape[-2:] == (72, 56)
