"""``ldm-sr``: latent-diffusion SR samples as LDMSuperResolutionPipeline does, trains, saves a
folder plain diffusers loads, tiles large outputs — with no text encoder anywhere."""

from __future__ import annotations

import math

import pytest
import torch
from dpo_step import one_dpo_step
from tiny_models import save_tiny_ldm_sr
from whole_method import assert_killed_training_resumes_to_the_same_weights, train_briefly

from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec


@pytest.fixture(scope="module")
def ldm(tmp_path_factory):
    return save_tiny_ldm_sr(tmp_path_factory.mktemp("ldm"))


def build(folder, extra: str = ""):
    return resolve_spec(
        PluginManager(), "backbone", f"ldm-sr:model={folder},steps=3,device=cpu{extra}"
    ).build()


@pytest.fixture(scope="module")
def lr():
    return torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))


def stock(folder, lr, seed: int):
    from diffusers import LDMSuperResolutionPipeline

    pipe = LDMSuperResolutionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    return pipe(image=lr * 2 - 1, num_inference_steps=3, generator=generator, output_type="pt").images[0]


def test_batched_candidates_are_the_stock_pipeline_once_per_seed(ldm, lr):
    model = build(ldm, ",chunk_size=2")
    result = model.sample(lr, [[1, 2, 3]], prompts=["ignored"])
    assert result.images.shape == (1, 3, 3, 64, 64) and result.latents.shape == (1, 3, 3, 16, 16)
    for index, seed in enumerate((1, 2, 3)):
        assert (stock(ldm, lr, seed) - result.images[0, index]).abs().max() < 1e-4
    assert not torch.allclose(result.images[0, 0], result.images[0, 1])
    noisy_steps = build(ldm, ",eta=1").sample(lr, [[1, 1]]).images[0]
    assert torch.equal(noisy_steps[0], noisy_steps[1])  # η > 0: still one image per seed


def test_a_dpo_step_trains_the_unet_saves_and_loads_in_plain_diffusers(ldm, lr, tmp_path):
    from diffusers import LDMSuperResolutionPipeline

    model = build(ldm)
    images = model.sample(lr, [[1, 2]]).images[0]
    model.prepare_training()
    x0 = model.encode(images).detach()
    condition = model.encode_condition(lr)
    one_dpo_step(model, x0, condition)
    model.unet.eval()
    model.save(tmp_path / "tuned")
    assert isinstance(
        LDMSuperResolutionPipeline.from_pretrained(tmp_path / "tuned"), LDMSuperResolutionPipeline
    )
    ours = build(tmp_path / "tuned").sample(lr, [[9]]).images[0, 0]
    assert (stock(tmp_path / "tuned", lr, 9) - ours).abs().max() < 1e-4
    assert (stock(ldm, lr, 9) - ours).abs().max() > 1e-4  # the tuned UNet is the saved one


def test_a_large_output_is_tiled_and_one_that_fits_is_not(ldm):
    lr = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    whole = build(ldm, ",tile=0").sample(lr, [[1]]).images
    assert torch.equal(build(ldm).sample(lr, [[1]]).images, whole)
    tiled_model = build(ldm, ",tile=64,overlap=16")
    assert len(tiled_model.windows(32, 32)) == 9
    tiled = tiled_model.sample(lr, [[1]]).images
    assert 10 * math.log10(1 / ((tiled - whole) ** 2).mean().item()) > 20


def test_the_whole_method_runs_resumes_when_killed_and_a_folder_missing_its_vqvae_is_refused(
    dp2o_cli, ldm, tmp_path, monkeypatch
):
    import shutil

    backbone = f"ldm-sr:model={ldm},steps=2,device=cpu"
    run = train_briefly(dp2o_cli, tmp_path, monkeypatch, backbone)
    assert_killed_training_resumes_to_the_same_weights(dp2o_cli, tmp_path, backbone)
    assert (run / "train" / "final" / "model_index.json").is_file()
    broken = tmp_path / "broken"
    shutil.copytree(ldm, broken)
    shutil.rmtree(broken / "vqvae")
    refused = dp2o_cli(
        "upscale", str(tmp_path / "hr" / "coffee.png"), str(tmp_path / "x4.png"),
        "--backbone", f"ldm-sr:model={broken},device=cpu",
    )  # fmt: skip
    assert refused.exit_code == 2 and "vqvae/" in refused.stderr and not (tmp_path / "x4.png").exists()


def test_an_lr_of_odd_sides_gives_exactly_four_times_its_size_and_trains(ldm):
    model = build(ldm)
    lr = torch.rand(1, 3, 17, 13, generator=torch.Generator().manual_seed(6))
    result = model.sample(lr, [[1, 2]])
    assert result.images.shape == (1, 2, 3, 68, 52) and result.latents.shape == (1, 2, 3, 17, 13)
    model.prepare_training()
    x0 = result.latents[0]
    timesteps = model.sample_timesteps(2, generator=torch.Generator().manual_seed(0))
    x_t, target = model.noisy(x0, torch.randn_like(x0), timesteps)
    prediction = model.predict(x_t, timesteps, model.encode_condition(lr.expand(2, -1, -1, -1)))
    assert prediction.shape == target.shape
