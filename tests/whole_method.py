"""The whole method, briefly, on a backbone under test: ``dp2o train`` of four steps on three
96-px photographs with the offline hybrid reward (no download) — and the same training killed
part-way and resumed."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import torch
from images import write_photos
from safetensors.torch import load_file

TESTS = Path(__file__).resolve().parent


def _train_args(tmp_path: Path, run: Path, backbone: str) -> list[str]:
    return [
        "train", "--run", str(run), "--backbone", backbone,
        "--data", f"hr:path={tmp_path / 'hr'},crop=96", "--reward", "hybrid-offline", "-m", "4",
        "--max-steps", "4", "--batch-size", "4", "--micro-batch-size", "2", "--checkpoint-every", "2",
        "--lr", "1e-4",
    ]  # fmt: skip


def train_briefly(dp2o_cli, tmp_path: Path, monkeypatch, backbone: str) -> Path:
    """Run ``dp2o train --backbone BACKBONE`` into ``tmp_path/run`` (asserting it succeeds);
    returns the run. The photographs are in ``tmp_path/hr``."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DP2O_CACHE", str(tmp_path / "cache"))
    write_photos(tmp_path / "hr", ("astronaut", "coffee", "chelsea"), size=96)
    run = tmp_path / "run"
    result = dp2o_cli(*_train_args(tmp_path, run, backbone))
    assert result.exit_code == 0, result.stderr
    return run


def assert_killed_training_resumes_to_the_same_weights(dp2o_cli, tmp_path: Path, backbone: str) -> None:
    """After :func:`train_briefly`: the same run without its training, SIGKILLed before step 3
    (after the step-2 checkpoint), then resumed, ends with the weights and the metrics of the
    run trained without a stop."""
    whole = tmp_path / "run"
    killed = tmp_path / "killed"
    shutil.copytree(whole, killed, ignore=lambda folder, names: ["train"] if Path(folder) == whole else [])
    args = _train_args(tmp_path, killed, backbone)
    process = subprocess.run(
        [sys.executable, str(TESTS / "train_kill_script.py"), "3", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
    assert not (killed / "train" / "final").exists()
    resumed = dp2o_cli(*args)
    assert resumed.exit_code == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    files = sorted(
        p.relative_to(whole / "train" / "final") for p in (whole / "train" / "final").rglob("*.safetensors")
    )
    assert files and files == sorted(
        p.relative_to(killed / "train" / "final") for p in (killed / "train" / "final").rglob("*.safetensors")
    )
    for name in files:
        expected, got = (
            load_file(whole / "train" / "final" / name),
            load_file(killed / "train" / "final" / name),
        )
        assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected), name
    assert (killed / "train" / "metrics.jsonl").read_text().splitlines() == (
        whole / "train" / "metrics.jsonl"
    ).read_text().splitlines()
