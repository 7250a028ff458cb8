"""``dp2o train --rounds K``: on-policy rounds end to end, resuming in round 2, the reference."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dp2o_core.pipeline.rounds import copy_trained_parameters
from dp2o_core.registry import PluginManager
from dp2o_core.specs import Spec, parse_spec, resolve_spec
from dp2o_core.store import RunStore

TESTS = Path(__file__).resolve().parent


def rounds_args(run: Path, *extra: str) -> list[str]:
    return [
        "train", "--run", str(run), "--rounds", "2", "--backbone", "tiny-sr:steps=2",
        "--data", "photos:split=train,crop=48,max_images=2", "--degradation", "bicubic",
        "--eval-data", "photos:split=held-out,crop=48,crops_per_image=2,crop_mode=random",
        "--reward", "hybrid:fr=[psnr,ssim],nr=[]", "--selector", "best-worst", "-m", "3",
        "--max-steps", "4", "--batch-size", "2", "--micro-batch-size", "2", "--checkpoint-every", "2",
        "--tracker", "none", *extra,
    ]  # fmt: skip


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(
        str(run / "rounds" / "2" / "train" / "final" / "unet" / "diffusion_pytorch_model.safetensors")
    )


def test_two_rounds_run_on_policy_and_a_kill_in_round_two_loses_nothing(dp2o_cli, tmp_path):
    whole = tmp_path / "whole"
    done = dp2o_cli(*rounds_args(whole))
    assert done.exit_code == 0, done.stderr
    round_two = whole / "rounds" / "2"
    # round 2 sampled with round 1's tuned model, on round 1's data, and trained on from it
    config = json.loads((round_two / "config.json").read_text())
    assert config["components"]["backbone"]["options"]["weights"] == str(whole / "train" / "final")
    assert (round_two / "data").is_symlink() and RunStore(round_two).status("data").state == "done"
    assert RunStore(round_two).status("eval").state == "done"
    assert "held-out reward per round" in done.stdout and "rounds/2/train/final" in done.stdout
    report = (whole / "report.html").read_text()
    assert 'data-key="rounds.2.mean_delta"' in report and (whole / "report" / "rounds_rewards.png").exists()
    status = dp2o_cli("status", str(whole), "--json")
    assert [r["round"] for r in json.loads(status.stdout)["rounds"]] == [2]

    # a moved run stays current (the previous round's weights are known by their training, not their path)
    moved = tmp_path / "moved"
    shutil.copytree(whole, moved, symlinks=True)
    again = dp2o_cli(*rounds_args(moved))
    assert again.exit_code == 0, again.stderr
    for stage in ("sample", "score", "pairs", "train", "eval"):
        assert f"{stage} (round 2): current — skipped" in again.stdout.splitlines()

    # a second process, killed at step 3 of round 2, then resumed
    killed = tmp_path / "killed"
    shutil.copytree(
        whole, killed, ignore=lambda folder, names: ["rounds", "report"] if Path(folder) == whole else []
    )
    process = subprocess.run(
        [sys.executable, str(TESTS / "train_kill_script.py"), "3", *rounds_args(killed)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "DP2O_KILL_IN": "rounds/2"},
    )  # fmt: skip
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert RunStore(killed / "rounds" / "2").status("train").state == "partial"
    before = {stage: RunStore(killed).record(stage)["fingerprint"] for stage in ("sample", "train", "eval")}
    resumed = dp2o_cli(*rounds_args(killed))
    assert resumed.exit_code == 0, resumed.stderr
    lines = resumed.stdout.splitlines()
    for stage in ("data", "sample", "score", "pairs", "train", "eval"):
        assert f"{stage}: current — skipped" in lines  # round 1 kept whole
    assert any(line.startswith("train (round 2): partial") for line in lines)
    assert any(line.startswith("sample (round 2): current — skipped") for line in lines)
    assert before == {stage: RunStore(killed).record(stage)["fingerprint"] for stage in before}
    expected, got = _weights(whole), _weights(killed)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)

    # the base model as reference: the round's candidates, scores and pairs stay, training is redone
    base = dp2o_cli(*rounds_args(whole, "--reference", "base"))
    assert base.exit_code == 0, base.stderr
    lines = base.stdout.splitlines()
    for stage in ("sample", "score", "pairs"):
        assert f"{stage} (round 2): current — skipped" in lines
    assert any(line.startswith("train (round 2):") and "redoing" in line for line in lines)


@pytest.mark.parametrize("kind", ["tiny-sr", "sd2-lora"])
def test_a_round_with_the_base_reference_starts_from_the_previous_weights(kind, tmp_path):
    """copy_trained_parameters: the trained parameters come from the round's sampling model,
    the reference stays the base model."""
    manager = PluginManager()
    base_spec = "tiny-sr:steps=2"
    if kind == "sd2-lora":
        from tiny_models import save_tiny_sd

        model = save_tiny_sd(tmp_path / "sd")
        base_spec = f"sd2:model={model},steps=2,device=cpu,geometry=exact"
        base_spec += ",trainable=lora-controlnet,lora_rank=4"
    tuned = resolve_spec(manager, "backbone", base_spec).build()
    tuned.prepare_training()
    with torch.no_grad():
        for parameter in tuned.trainable_parameters():
            parameter.add_(0.01)
    tuned.save(tmp_path / "tuned")
    parsed = parse_spec(base_spec, "backbone")
    tuned_spec = str(Spec(parsed.name, {**parsed.options, **tuned.tuned_options(tmp_path / "tuned")}))
    base = resolve_spec(manager, "backbone", base_spec).build()
    base.prepare_training()
    reference_before = _predictions(base)
    copy_trained_parameters(resolve_spec(manager, "backbone", tuned_spec).build(), base, what=tuned_spec)
    for mine, wanted in zip(base.trainable_parameters(), tuned.trainable_parameters(), strict=True):
        assert torch.equal(mine.detach(), wanted.detach())
    policy, reference = _predictions(base), reference_before
    assert torch.equal(policy[1], reference[1])  # the reference is still the base model
    if kind == "tiny-sr":  # (a fresh ControlNet's zero convolutions hide its weights from the output)
        assert not torch.equal(policy[0], reference[0])  # the policy starts from the tuned weights
    assert torch.equal(policy[0], _predictions(tuned)[0])


def _predictions(backbone):
    """(policy, reference) predictions of one fixed noisy input."""
    generator = torch.Generator().manual_seed(0)
    hr = torch.rand(1, 3, 32, 32, generator=generator)
    with torch.no_grad():
        x0 = backbone.encode(hr)
        x_t = x0 + torch.randn(x0.shape, generator=generator)
        condition = {
            **backbone.encode_condition(torch.nn.functional.avg_pool2d(hr, 4)),
            **backbone.encode_prompts([""]),
        }
        steps = torch.tensor([500])
        return tuple(backbone.predict(x_t, steps, condition, reference=r).float() for r in (False, True))


def test_fresh_data_draws_new_random_crops_for_each_round(dp2o_cli, tmp_path):
    run = tmp_path / "fresh"
    args = rounds_args(run, "--fresh-data", "--max-steps", "2", "--swap-labels", "0.5")
    args[args.index("photos:split=train,crop=48,max_images=2")] = (
        "photos:split=train,crop=48,crop_mode=random,max_images=2"
    )
    result = dp2o_cli(*args)
    assert result.exit_code == 0, result.stderr
    round_two = run / "rounds" / "2"
    assert not (round_two / "data").is_symlink() and RunStore(round_two).status("data").state == "done"
    first, second = (sorted((folder / "data" / "hr").rglob("*.png")) for folder in (run, round_two))
    assert [p.name for p in first] == [p.name for p in second]  # the same items …
    assert all(a.read_bytes() != b.read_bytes() for a, b in zip(first, second, strict=True))  # … other crops
    # the flags reach the settings: every round's training is the shuffled-label control
    for folder in (run, round_two):
        assert RunStore(folder).record("train")["config"]["train"]["swap_labels"] == 0.5
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["rounds"] == {"count": 2, "reference": "previous", "fresh_data": True}
