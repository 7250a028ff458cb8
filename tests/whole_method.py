"""The whole method, briefly, on a backbone under test: ``dp2o train`` of two steps on three
96-px photographs with the offline hybrid reward (no download)."""

from __future__ import annotations

from pathlib import Path

from images import write_photos


def train_briefly(dp2o_cli, tmp_path: Path, monkeypatch, backbone: str) -> Path:
    """Run ``dp2o train --backbone BACKBONE`` into ``tmp_path/run`` (asserting it succeeds);
    returns the run. The photographs are in ``tmp_path/hr``."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DP2O_CACHE", str(tmp_path / "cache"))
    write_photos(tmp_path / "hr", ("astronaut", "coffee", "chelsea"), size=96)
    run = tmp_path / "run"
    result = dp2o_cli(
        "train", "--run", str(run), "--backbone", backbone,
        "--data", f"hr:path={tmp_path / 'hr'},crop=96", "--reward", "hybrid-offline", "-m", "4",
        "--max-steps", "2", "--batch-size", "4", "--micro-batch-size", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return run
