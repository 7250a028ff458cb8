"""``dp2o pretrain``: a generator built from HR images alone, validated, resumable after SIGKILL,
refused before any step on bad input, and usable by ``dp2o train`` and ``dp2o upscale``."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from images import write_photos
from safetensors.torch import load_file

from dp2o_core.store import RunStore

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder, ("astronaut", "coffee", "chelsea"), size=96)
    return folder


def pretrain_args(run: Path, photos: Path, *extra: str, steps: int = 4) -> list[str]:
    return [
        "pretrain",
        str(run),
        "--backbone",
        "tiny-sr:init=random,device=cpu",
        "--data",
        f"hr:path={photos}",
        "--degradation",
        "bicubic",
        "--crop",
        "32",
        "--batch-size",
        "4",
        "--micro-batch-size",
        "2",
        "--max-steps",
        str(steps),
        "--warmup-steps",
        "1",
        "--lr",
        "1e-3",
        "--checkpoint-every",
        "2",
        "--tracker",
        "none",
        *extra,
    ]


def printed_spec(stdout: str) -> str:
    return re.search(r"dp2o upscale LR_IMAGES OUTPUT --backbone '([^']+)'", stdout).group(1)


def test_pretrain_validates_saves_the_average_and_chains_into_upscale_and_train(dp2o_cli, photos, tmp_path):
    run = tmp_path / "pre"
    held_out = f"hr:path={photos},crop=32"
    done = dp2o_cli(*pretrain_args(run, photos, "--eval-data", held_out, "--validate-every", "2"))
    assert done.exit_code == 0, done.stderr + done.stdout
    spec = printed_spec(done.stdout)
    assert spec == f"tiny-sr:weights={(run / 'pretrain' / 'final').absolute()}"  # init=random is not kept

    store = RunStore(run)
    assert store.status("pretrain").state == "done"
    assert "steps 4/4" in dp2o_cli("status", str(run)).stdout
    records = [json.loads(line) for line in (run / "pretrain" / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 2, 4]
    assert set(records[0]["model"]) == set(records[0]["bicubic"]) == {"psnry", "ssim"}
    assert records[0]["bicubic"] == records[-1]["bicubic"]  # the baseline does not train
    assert records[0]["model"] != records[-1]["model"]
    assert (run / "pretrain" / "validation" / "step-000004.png").is_file()
    page = (run / "report.html").read_text()  # the command writes the report
    assert f'data-key="pretrain.validation.last.psnry" data-value="{records[-1]["model"]["psnry"]!r}"' in page
    assert "report/pretrain_curves.png" in page and "pretrain/validation/step-000004.png" in page
    history = [json.loads(line) for line in (run / "pretrain" / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2, 3, 4] and all(h["examples"] == 4 for h in history)

    # the saved weights are the exponential moving average, not the weights the step trained
    checkpoint = run / "pretrain" / "checkpoints" / "step-000002"
    saved = load_file(str(checkpoint / "weights" / "unet" / "diffusion_pytorch_model.safetensors"))
    averaged = load_file(str(checkpoint / "ema.safetensors"))
    trained = load_file(str(checkpoint / "state" / "model.safetensors"))
    assert len(saved) == len(averaged) == len(trained)

    def sums(tensors):
        return sorted(round(float(t.double().sum()), 4) for t in tensors.values())

    assert sums(saved) == sums(averaged) != sums(trained)

    out = tmp_path / "up"
    upscaled = dp2o_cli("upscale", str(photos / "coffee.png"), str(out), "--backbone", spec)
    assert upscaled.exit_code == 0, upscaled.stderr
    assert (out / "coffee.png").is_file()

    trained = dp2o_cli(
        "train", "--run", str(tmp_path / "dpo"), "--backbone", spec, "--data", f"hr:path={photos},crop=32",
        "--degradation", "bicubic", "--reward", "hybrid:fr=[psnr,ssim],nr=[]", "--selector", "best-worst",
        "-m", "3", "--max-steps", "1", "--batch-size", "2", "--tracker", "none",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.stderr + trained.stdout
    assert RunStore(tmp_path / "dpo").status("train").state == "done"

    # a changed setting would discard the pretraining: refused, nothing written
    again = dp2o_cli("pretrain", str(run), "--max-steps", "6")
    assert again.exit_code == 2
    assert "pretrain: 4 trained step(s) would be discarded" in again.stderr
    assert "pretrain.max_steps: 4 → 6" in again.stderr
    assert store.status("pretrain").state == "done"


def test_pretraining_killed_with_sigkill_resumes_to_the_same_weights(dp2o_cli, photos, tmp_path):
    whole = tmp_path / "whole"
    done = dp2o_cli(*pretrain_args(whole, photos, steps=6))
    assert done.exit_code == 0, done.stderr
    killed = tmp_path / "killed"
    process = subprocess.run(
        [sys.executable, str(TESTS / "train_kill_script.py"), "4", *pretrain_args(killed, photos, steps=6)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert RunStore(killed).status("pretrain").state == "partial"
    assert "steps 2/6" in dp2o_cli("status", str(killed)).stdout

    resumed = dp2o_cli(*pretrain_args(killed, photos, steps=6))
    assert resumed.exit_code == 0, resumed.stderr
    assert "resumed from step 2" in resumed.stdout
    for name in ("unet/diffusion_pytorch_model.safetensors",):
        expected = load_file(str(whole / "pretrain" / "final" / name))
        got = load_file(str(killed / "pretrain" / "final" / name))
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert (killed / "pretrain" / "metrics.jsonl").read_text() == (
        whole / "pretrain" / "metrics.jsonl"
    ).read_text()


def test_images_smaller_than_the_crop_are_refused_before_any_step(dp2o_cli, photos, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(photos, data)
    write_photos(data, ("moon",), size=24)
    run = tmp_path / "run"
    result = dp2o_cli(*pretrain_args(run, data))
    assert result.exit_code == 2
    assert "1 of 4 cannot be cropped" in result.stderr
    assert f"{data / 'moon.png'}: 24×24 pixels, smaller than the 32-pixel crop" in result.stderr
    assert "pass a smaller --crop" in result.stderr
    assert not run.exists()


DEGRADATION_PLUGIN = '''
import torch.nn.functional as F
from dp2o_core import Degradation, hookimpl

class HalfOnly(Degradation):
    """Always halves the image, whatever scale is asked for."""

    name = "half-only"

    def degrade(self, hr, seeds, scale):
        return F.interpolate(hr, scale_factor=0.5, mode="area")

@hookimpl
def register_degradations(register):
    register(HalfOnly)
'''


def test_a_degradation_of_another_scale_and_a_crop_off_the_scale_are_refused(
    dp2o_cli, photos, tmp_path, monkeypatch
):
    (tmp_path / "half_only_plugin.py").write_text(DEGRADATION_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    args = pretrain_args(run, photos)
    args[args.index("--degradation") + 1] = "half-only"
    args[args.index("--crop") + 1] = "30"
    result = dp2o_cli("-p", "half_only_plugin", *args)
    assert result.exit_code == 2, result.stdout
    assert "the crop must be a multiple of the backbone's scale ×4" in result.stderr
    assert "it makes 15×15 images, not 7×7: its scale differs from the backbone's ×4" in result.stderr
    assert not run.exists()


def test_a_controlnet_file_of_the_wrong_shape_is_refused_before_any_step(dp2o_cli, photos, tmp_path):
    from test_controlnet_files import sd_controlnet_file
    from tiny_models import save_tiny_sd

    model = save_tiny_sd(tmp_path / "sd")
    wrong = sd_controlnet_file(model, tmp_path / "sd15.safetensors", cross_attention_dim=48)
    run = tmp_path / "run"
    args = pretrain_args(run, photos)
    args[args.index("--backbone") + 1] = f"sd2:model={model},controlnet={wrong},device=cpu,geometry=exact"
    result = dp2o_cli(*args)
    assert result.exit_code == 2
    assert "cross-attention width 48" in result.stderr
    assert not run.exists()


def _held_out_errors(backbone, hr: torch.Tensor, repeats: int = 4) -> tuple[float, float]:
    """(mean denoising error on held-out crops at fixed timesteps and noises, mean absolute change
    of the prediction when each crop gets another crop's LR as its condition)."""
    from dp2o_plugins.degradations.bicubic import BicubicDegradation

    from dp2o_core.training.objective import per_sample_error

    lr = BicubicDegradation().degrade(hr, [0] * len(hr), backbone.scale)
    generator = torch.Generator().manual_seed(0)
    errors, changes = [], []
    with torch.no_grad():
        x0 = backbone.encode(hr)
        prompts = dict(backbone.encode_prompts([""] * len(hr)))
        matched = dict(backbone.encode_condition(lr)) | prompts
        swapped = dict(backbone.encode_condition(lr.roll(1, 0))) | prompts
        for _ in range(repeats):
            t = backbone.sample_timesteps(len(hr), generator=generator)
            x_t, target = backbone.noisy(x0, torch.randn(x0.shape, generator=generator), t)
            prediction = backbone.predict(x_t, t, matched)
            errors.append(float(per_sample_error(prediction, target).mean()))
            changes.append(float((prediction - backbone.predict(x_t, t, swapped)).abs().mean()))
    return sum(errors) / repeats, sum(changes) / repeats


@pytest.mark.parametrize("kind", ["sd2", "flux"])
def test_a_new_controlnet_learns_to_use_the_lr_image(dp2o_cli, photos, tmp_path, kind):
    """A ControlNet made from the base model ignores the LR at first (zero convolutions); after
    pretraining its prediction depends on the LR and its held-out denoising error is lower."""
    from images import photo
    from tiny_models import save_tiny_flux, save_tiny_sd

    from dp2o_core.imageio import array_to_tensor
    from dp2o_core.registry import PluginManager
    from dp2o_core.specs import resolve_spec

    # VAE latents of unit scale, so that the latents carry the image (a random VAE's are tiny)
    vae = {"scaling_factor": 4.5} if kind == "sd2" else {"scaling_factor": 4.5, "shift_factor": -0.15}
    model = (save_tiny_sd if kind == "sd2" else save_tiny_flux)(tmp_path / "model", vae=vae)
    spec = f"{kind}:model={model},device=cpu,geometry=exact,controlnet=new"
    run = tmp_path / "run"
    args = pretrain_args(run, photos, steps=12)
    args[args.index("--backbone") + 1] = spec
    args[args.index("--crop") + 1] = "64"
    done = dp2o_cli(*args, "--schedule", "constant", "--ema", "0")
    assert done.exit_code == 0, done.stderr + done.stdout

    def build(text):
        return resolve_spec(PluginManager(), "backbone", text).build()

    held_out = torch.cat([array_to_tensor(photo(name, 64)) for name in ("camera", "rocket", "coins")])
    start_error, start_change = _held_out_errors(build(spec), held_out)
    error, change = _held_out_errors(build(printed_spec(done.stdout)), held_out)
    assert start_change == 0.0  # zero convolutions: the LR image has no effect yet
    assert change > 1e-4
    assert error < 0.95 * start_error  # measured: 0.90× (SD2), 0.77× (FLUX) after 12 steps


def test_two_processes_pretrain_with_ddp_and_match_one_process(photos, tmp_path):
    """Under accelerate launch each process takes its share of every step's crops; the averaged
    gradient, and so the weights, are those of one process."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # both runs compute in the same order
    single, double = tmp_path / "single", tmp_path / "double"
    alone = subprocess.run(
        [sys.executable, "-m", "dp2o_cli", *pretrain_args(single, photos, steps=3)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert alone.returncode == 0, alone.stderr[-3000:]
    launcher = Path(sys.executable).with_name("accelerate")
    together = subprocess.run(
        [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "dp2o_cli",
         *pretrain_args(double, photos, steps=3)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert together.returncode == 0, together.stderr[-3000:]
    name = "pretrain/final/unet/diffusion_pytorch_model.safetensors"
    one, two = load_file(str(single / name)), load_file(str(double / name))
    assert all(torch.allclose(one[k], two[k], atol=1e-6, rtol=1e-5) for k in one)
    history = [(run / "pretrain" / "metrics.jsonl").read_text().splitlines() for run in (single, double)]
    losses = [[json.loads(line)["loss"] for line in lines] for lines in history]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
