"""``sd-upscaler``: Stable Diffusion's ×4 upscaler samples as the stock pipeline does, trains,
saves a folder plain diffusers loads, tiles large outputs, and is checked before it loads."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys

import pytest
import torch
from dpo_step import one_dpo_step
from tiny_models import save_tiny_upscaler
from whole_method import assert_killed_training_resumes_to_the_same_weights, train_briefly

from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory):
    return save_tiny_upscaler(tmp_path_factory.mktemp("upscaler"))


def build(folder, extra: str = ""):
    spec = f"sd-upscaler:model={folder},steps=3,device=cpu{extra}"
    return resolve_spec(PluginManager(), "backbone", spec).build()


@pytest.fixture(scope="module")
def lr():
    return torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))


def stock(folder, lr, seed: int, **kwargs):
    from diffusers import StableDiffusionUpscalePipeline

    pipe = StableDiffusionUpscalePipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt="", image=lr, num_inference_steps=3, generator=torch.Generator().manual_seed(seed),
        output_type="pt", **kwargs,
    ).images[0]  # fmt: skip


def test_batched_candidates_are_the_stock_pipeline_once_per_seed(upscaler, lr):
    model = build(upscaler, ",chunk_size=2")
    assert model.scale == 4
    result = model.sample(lr, [[5, 6, 7]])
    assert result.images.shape == (1, 3, 3, 64, 64) and result.latents.shape == (1, 3, 4, 16, 16)
    for index, seed in enumerate((5, 6, 7)):
        assert (stock(upscaler, lr, seed) - result.images[0, index]).abs().max() < 1e-4
    assert not torch.allclose(result.images[0, 0], result.images[0, 1])
    # the options reach the computation as the pipeline's arguments do
    other = build(upscaler, ",noise_level=100,guidance_scale=4").sample(lr, [[5]]).images[0, 0]
    assert (stock(upscaler, lr, 5, noise_level=100, guidance_scale=4.0) - other).abs().max() < 1e-4


def test_a_dpo_step_moves_the_unet_and_keeps_the_reference(upscaler, lr):
    model = build(upscaler)
    images = model.sample(lr, [[1, 2]]).images[0]
    model.prepare_training()
    x0 = model.encode(images).detach()
    condition = {**model.encode_condition(lr), **model.encode_prompts([""])}
    again = model.encode_condition(lr)
    assert torch.equal(condition["noised_lr"], again["noised_lr"])  # the cached condition is one
    weights = {n: p.detach().clone() for n, p in model.unet.named_parameters()}
    before, _ = one_dpo_step(model, x0, condition)
    assert torch.allclose(before.policy_winner, before.reference_winner)  # the reference starts as the policy
    assert any(not torch.equal(weights[n], p) for n, p in model.unet.named_parameters())


def test_saved_folder_loads_in_plain_diffusers_and_as_the_backbone(upscaler, lr, tmp_path):
    model = build(upscaler)
    model.prepare_training()
    with torch.no_grad():
        for parameter in model.unet.parameters():
            parameter.add_(0.01)
    model.unet.eval()
    model.save(tmp_path / "tuned")
    ours = build(tmp_path / "tuned").sample(lr, [[4]]).images[0, 0]
    assert model.tuned_options(tmp_path / "tuned") == {"model": str(tmp_path / "tuned")}
    torch.save(lr, tmp_path / "lr.pt")
    script = f"""
import torch
from diffusers import StableDiffusionUpscalePipeline
pipe = StableDiffusionUpscalePipeline.from_pretrained({str(tmp_path / "tuned")!r})
lr = torch.load({str(tmp_path / "lr.pt")!r})
image = pipe(prompt="", image=lr, num_inference_steps=3, generator=torch.Generator().manual_seed(4),
             output_type="pt").images[0]
torch.save(image, {str(tmp_path / "stock.pt")!r})
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (torch.load(tmp_path / "stock.pt") - ours).abs().max() < 1e-4


def test_a_large_output_is_tiled_and_one_that_fits_is_not(upscaler):
    lr = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    whole = build(upscaler, ",tile=0").sample(lr, [[1]]).images
    assert torch.equal(build(upscaler).sample(lr, [[1]]).images, whole)  # 128 px fits tile=512
    tiled_model = build(upscaler, ",tile=64,overlap=16")
    assert len(tiled_model.windows(32, 32)) == 9
    tiled = tiled_model.sample(lr, [[1]]).images
    assert 10 * math.log10(1 / ((tiled - whole) ** 2).mean().item()) > 20


def test_a_folder_without_its_low_res_scheduler_is_refused_before_loading(dp2o_cli, upscaler, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(upscaler, broken)
    shutil.rmtree(broken / "low_res_scheduler")
    from images import write_photos

    write_photos(tmp_path / "in", ("coffee",), size=16)
    spec = f"sd-upscaler:model={broken},device=cpu"
    result = dp2o_cli(
        "upscale", str(tmp_path / "in" / "coffee.png"), str(tmp_path / "out.png"), "--backbone", spec
    )
    assert result.exit_code == 2
    assert "low_res_scheduler/" in result.stderr and not (tmp_path / "out.png").exists()
    listed = dp2o_cli("plugins", "--all", "--kind", "backbone")
    assert "sd-upscaler" in listed.stdout


def test_the_whole_method_runs_resumes_when_killed_and_its_tuned_folder_upscales(
    dp2o_cli, upscaler, tmp_path, monkeypatch
):
    backbone = f"sd-upscaler:model={upscaler},steps=2,device=cpu"
    run = train_briefly(dp2o_cli, tmp_path, monkeypatch, backbone)
    assert_killed_training_resumes_to_the_same_weights(dp2o_cli, tmp_path, backbone)
    tuned = run / "train" / "final"
    assert (tuned / "model_index.json").is_file() and (tuned / "low_res_scheduler").is_dir()
    upscaled = dp2o_cli(
        "upscale", str(tmp_path / "hr" / "coffee.png"), str(tmp_path / "x4.png"),
        "--backbone", f"sd-upscaler:model={tuned},steps=2,device=cpu",
    )  # fmt: skip
    assert upscaled.exit_code == 0, upscaled.stderr
    from PIL import Image

    assert Image.open(tmp_path / "x4.png").size == (384, 384)
