"""Scoring one group: dp2o's scorer vs calling pyiqa once per candidate, side by side.

M = 16 candidates at 256×256 against one HR reference, on the CPU, with random-weight
networks (compute does not depend on weight values):

* LPIPS, TOPIQ-FR and A-FINE-FR (full-reference, learned features): dp2o computes the
  reference's features once per group; pyiqa per candidate computes them M times;
* FSIM (classical full-reference): batched;
* TOPIQ-NR and MUSIQ (no-reference): batched on a GPU, one image per call on a CPU.

The two ways run interleaved (round k runs both, in an order that rotates with k); each line
prints the median time of each way, the median over rounds of the per-round ratio (naive /
dp2o) with its spread (min–max), and the largest score difference.
``python benchmarks/score_group.py [--candidates 16] [--size 256] [--rounds 5] [--only NAME]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from dp2o_plugins.rewards.scoring import score_candidates
from interleave import Ratio, interleaved

METRICS = {
    "lpips": {"net": "squeeze", "pretrained": False, "pnet_rand": True},
    "topiq_fr": {"pretrained": False, "backbone_pretrain": False},
    "afine_fr": None,  # built from random stand-ins of its downloads, see random_afine
    "fsim": {},
    "topiq_nr": {"pretrained": False, "backbone_pretrain": False},
    "musiq": {"pretrained": False},
}


def random_afine(folder: Path):
    """A-FINE-FR with random weights, built through pyiqa from stand-in files (no download)."""
    import pyiqa
    import pytest

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from iqa_weights import install_random_afine, local_clip_files
    from pyiqa.archs import afine_arch

    patch = pytest.MonkeyPatch()
    patch.setenv("HOME", str(folder / "home"))
    local_clip_files(patch)
    install_random_afine(folder / "weights", folder / "home")
    weights = folder / "weights" / afine_arch.default_model_urls["afine"].rsplit("/", 1)[-1]
    metric = pyiqa.create_metric("afine_fr", device="cpu", pretrained_model_path=str(weights))
    patch.undo()
    return metric


def make_metric(name: str, folder: Path):
    import pyiqa

    torch.manual_seed(0)
    kwargs = METRICS[name]
    if kwargs is None:
        return random_afine(folder)
    return pyiqa.create_metric(name, device="cpu", **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=None, help="default: dp2o's automatic choice")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of both ways")
    parser.add_argument("--only", choices=sorted(METRICS), action="append", help="benchmark these metrics")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(1, 3, args.size, args.size, generator=generator)
    candidates = (
        reference + 0.1 * torch.randn(args.candidates, 3, args.size, args.size, generator=generator)
    ).clamp(0, 1)
    print(
        f"M = {args.candidates} candidates at {args.size}×{args.size}, CPU threads "
        f"{torch.get_num_threads()}, {args.rounds} interleaved rounds"
    )
    print(
        f"{'metric':<10} {'mode':<4} {'pyiqa/cand s':>12} {'dp2o s':>8} "
        f"{'ratio: median (min–max)':>24} {'max |Δ|':>9}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for name in args.only or METRICS:
            metric = make_metric(name, Path(folder)).eval()
            mode = metric.metric_mode

            def naive(metric=metric, mode=mode):
                with torch.no_grad():
                    return [
                        float(
                            metric(candidates[i : i + 1].clone(), reference.clone())
                            if mode == "FR"
                            else metric(candidates[i : i + 1].clone())
                        )
                        for i in range(args.candidates)
                    ]

            def ours(metric=metric, mode=mode):
                return score_candidates(metric, mode, candidates, reference, args.batch_size, "float32")

            times, results = interleaved({"naive": naive, "dp2o": ours}, args.rounds)
            diff = max(abs(a - b) for a, b in zip(results["naive"], results["dp2o"], strict=True))
            ratio = Ratio.of(times["naive"], times["dp2o"])
            print(
                f"{name:<10} {mode:<4} {statistics.median(times['naive']):12.3f} "
                f"{statistics.median(times['dp2o']):8.3f} {ratio!s:>24} {diff:9.2e}",
                flush=True,
            )


if __name__ == "__main__":
    main()
