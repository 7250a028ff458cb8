"""Scoring one group: dp2o's scorer vs calling pyiqa once per candidate, side by side.

M = 16 candidates at 256×256 against one HR reference, on the CPU, with random-weight
networks (compute does not depend on weight values):

* LPIPS (full-reference): dp2o computes the reference's features once per group and
  scores candidates in batches;
* TOPIQ-FR (full-reference): batched, reference broadcast;
* TOPIQ-NR and MUSIQ (no-reference): batched;
* FSIM (classical full-reference): batched.

Prints each method's best time over interleaved runs, the ratio (naive / dp2o) and the largest score
difference. ``python benchmarks/score_group.py [--candidates 16] [--size 256] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from dp2o_plugins.rewards.scoring import score_candidates

METRICS = {
    "lpips": {"net": "squeeze", "pretrained": False, "pnet_rand": True},
    "topiq_fr": {"pretrained": False, "backbone_pretrain": False},
    "topiq_nr": {"pretrained": False, "backbone_pretrain": False},
    "musiq": {"pretrained": False},
    "fsim": {},
}


def interleaved(first, second, repeats: int):
    """Best time of each of two functions, alternating runs so both see the same machine load."""
    first(), second()  # warm-up
    times: tuple[list[float], list[float]] = ([], [])
    results: list = [None, None]
    for _ in range(repeats):
        for index, function in enumerate((first, second)):
            start = time.perf_counter()
            results[index] = function()
            times[index].append(time.perf_counter() - start)
    return min(times[0]), min(times[1]), results[0], results[1]


def main() -> None:
    import pyiqa

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=None, help="default: dp2o's automatic choice")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(1, 3, args.size, args.size, generator=generator)
    candidates = (
        reference + 0.1 * torch.randn(args.candidates, 3, args.size, args.size, generator=generator)
    ).clamp(0, 1)
    print(
        f"M = {args.candidates} candidates at {args.size}×{args.size}, CPU threads {torch.get_num_threads()}"
    )
    print(f"{'metric':<10} {'mode':<4} {'pyiqa/cand s':>12} {'dp2o s':>8} {'ratio':>6} {'max |Δ|':>9}")
    for name, kwargs in METRICS.items():
        torch.manual_seed(0)
        metric = pyiqa.create_metric(name, device="cpu", **kwargs).eval()
        mode = metric.metric_mode

        def naive(metric=metric, mode=mode):
            with torch.no_grad():
                return [
                    float(
                        metric(candidates[i : i + 1], reference)
                        if mode == "FR"
                        else metric(candidates[i : i + 1])
                    )
                    for i in range(args.candidates)
                ]

        def ours(metric=metric, mode=mode):
            return score_candidates(metric, mode, candidates, reference, args.batch_size, "float32")

        naive_s, ours_s, naive_scores, our_scores = interleaved(naive, ours, args.repeats)
        diff = max(abs(a - b) for a, b in zip(naive_scores, our_scores, strict=True))
        print(f"{name:<10} {mode:<4} {naive_s:12.3f} {ours_s:8.3f} {naive_s / ours_s:6.2f} {diff:9.2e}")


if __name__ == "__main__":
    main()
