"""The GPU benchmark runs end to end (on the CPU, at a small width) and reports what it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sd2", "flux"])
def test_gpu_benchmark_runs_tiny_on_the_cpu_and_prints_its_json(kind):
    command = [sys.executable, str(BENCHMARKS / "gpu.py"), "--tiny", "--only", kind, "--size", "64"]
    command += ["--candidates", "2", "--steps", "1", "--rounds", "1", "--train-steps", "1", "--json"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    sampling, training = report[kind]["sampling"], report[kind]["training"]
    assert sampling["images_per_s"] > 0 and sampling["stock_images_per_s"] > 0
    assert sampling["ratio"] == pytest.approx(sampling["images_per_s"] / sampling["stock_images_per_s"])
    assert sampling["flops"] > 0 and training["step_flops"] > 0
    assert training["pairs_per_s"] > 0 and training["naive_steps_per_s"] > 0
    assert training["peak_gib"] > 0 and training["naive_peak_gib"] > 0
    # dp2o holds no VAE/text-encoder copy and one reference ControlNet: less model state than naive
    assert 0 < training["model_state_ratio"] < 1
    assert training["mfu"] is None  # no GPU, no peak to compare with
    assert f"{kind}: sampling dp2o" in result.stdout and "MFU n/a" in result.stdout
