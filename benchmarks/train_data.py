"""Training data at the paper's scale: memory, time to the first batch, pairs per second.

Builds a run of G groups × 64 candidates (30,000: the paper's data set) with 16 × 16 = 256
pairs per group (7.68 M pairs, SD2's ratio 1/4) and SD2-sized cached tensors: every
candidate's latent is a 4 × 64 × 64 float32 row of its group's latent file and every group
has a 3 × 512 × 512 float32 control image as its condition (what the SD2 backbone caches).
So that the run fits a disk, every group's latent file and condition file is a hard link
to one of ``--files`` real-sized files: each group has its own paths (no cache keyed by
path hits more than in a real run) and every read is a real read of a real-sized file.
``--control-side 128`` gives each group a condition of LR size instead (3 × 128 × 128), to
see what the rest of the pipeline delivers when the conditions are small.

Then, each way in a fresh process, dp2o's ``TrainingData`` and the way before
(``benchmarks/object_training_data.py``: a Python object per pair and per candidate, whole
latent files) are measured:

* ``memory GB`` — the resident memory the training data adds to the process (its peak,
  after construction, preparation and the batches), beyond the model;
* ``first batch s`` — from constructing the data to the first micro-batch in hand;
* ``pairs/s`` — pairs delivered per second for 1,024-pair steps in micro-batches of
  ``--micro-batch``, named ahead the way the trainer names them; ``warm`` after the files
  were read once, ``cold`` after they were dropped from the page cache
  (``posix_fadvise(DONTNEED)``, no root needed).

``python benchmarks/train_data.py [--groups 30000] [--steps 4] [--rounds 3] [--json]``;
the ways alternate ``--rounds`` times and the medians and the ratios' spread are printed.
The last line of ``--json`` is one JSON object. Peak memory of the way before grows with the
pairs (gigabytes at 7.68 M); use ``--groups 3000`` for a quick look.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from interleave import Ratio  # noqa: E402  (this folder is on sys.path when run as a script)

CANDIDATES = 64
SIDE = 16  # winners and losers per group
LATENT = (4, 64, 64)
STEP_PAIRS = 1024


# -- the synthetic run -----------------------------------------------------------------------------
def build_run(root: Path, groups: int, files: int, control_side: int = 512, chunk: int = 5_000) -> None:
    """Data, sample and pairs stages of ``groups`` groups with shared real-sized tensor files."""
    import numpy as np
    import pyarrow as pa
    import torch
    from safetensors.torch import save_file

    from dp2o_core.store import ProcessInfo, RunStore

    store = RunStore(root)
    ids = [f"img_{g:07d}" for g in range(groups)]
    shared = root / "sample" / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    for k in range(files):
        save_file(
            {"latents": torch.randn((CANDIDATES, *LATENT), generator=generator)},
            str(shared / f"latents-{k}.safetensors"),
        )
        control = torch.rand((1, 3, control_side, control_side), generator=generator)
        save_file({"control": control}, str(shared / f"control-{k}.safetensors"))
    rng = np.random.default_rng(0)
    process = ProcessInfo()
    with store.open_stage("data", config={"synthetic": groups}, group_ids=ids, process=process) as w:
        for start in range(0, groups, chunk):
            part = ids[start : start + chunk]
            n = len(part)
            w.add_block(part, groups=pa.table({
                "group_id": part, "lr": [f"data/lr/{g}.png" for g in part], "hr": [None] * n,
                "source_lr": [None] * n, "source_hr": [None] * n, "prompt": [None] * n,
                "crop_top": np.zeros(n, np.int32), "crop_left": np.zeros(n, np.int32),
                "lr_height": np.full(n, 128, np.int32), "lr_width": np.full(n, 128, np.int32),
                "seed": np.zeros(n, np.int64),
            }))  # fmt: skip
    with store.open_stage("sample", config={"synthetic": groups}, group_ids=ids, process=process) as w:
        for start in range(0, groups, chunk):
            part = ids[start : start + chunk]
            gid = np.repeat(part, CANDIDATES)
            m = np.tile(np.arange(CANDIDATES), len(part))
            shard = [f"sample/latents/{g}.safetensors" for g in gid]
            w.add_block(part, candidates=pa.table({
                "group_id": gid, "candidate": m.astype(np.int32), "seed": m.astype(np.int64),
                "image": [f"sample/images/{g}/{c:03d}.png" for g, c in zip(gid, m, strict=True)],
                "latent_shard": shard, "latent_index": m.astype(np.int32),
            }))  # fmt: skip
            (root / "sample" / "latents").mkdir(exist_ok=True)
            for offset, group_id in enumerate(part):  # each group its own paths, sharing files
                k = (start + offset) % files
                os.link(
                    shared / f"latents-{k}.safetensors",
                    root / "sample" / "latents" / f"{group_id}.safetensors",
                )
                path = store.group_path("sample", "conditions", group_id, suffix=".safetensors")
                path.parent.mkdir(parents=True, exist_ok=True)
                os.link(shared / f"control-{k}.safetensors", path)
    with store.open_stage(
        "pairs", config={"synthetic": groups}, group_ids=ids, process=process, imported=True
    ) as w:
        for start in range(0, groups, chunk):
            part = ids[start : start + chunk]
            order = np.argsort(rng.random((len(part), CANDIDATES)), axis=1)
            winners = np.repeat(order[:, :SIDE], SIDE, axis=1).ravel()
            losers = np.tile(order[:, -SIDE:], (1, SIDE)).ravel()
            count = len(winners)
            w.add_block(part, pairs=pa.table({
                "group_id": np.repeat(part, SIDE * SIDE), "winner": winners.astype(np.int32),
                "loser": losers.astype(np.int32), "winner_reward": rng.random(count) + 1,
                "loser_reward": rng.random(count), "intra_weight": rng.random(count) + 0.5,
                "inter_weight": rng.random(count) + 0.5, "weight": rng.random(count) + 0.5,
            }))  # fmt: skip


def drop_page_cache(root: Path) -> None:
    """Evict the run's tensor files from the page cache (clean pages; no root needed)."""
    for path in (root / "sample" / "shared").iterdir():  # the links share these files' pages
        with open(path, "rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


# -- one measurement, in its own process -----------------------------------------------------------
def resident_kb(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def deliver(data, steps: int, micro: int, first_step: int) -> float:
    """Pairs per second over ``steps`` 1,024-pair steps, the next micro-batch named ahead."""
    chunks = [
        list(range(start, start + micro))
        for step in range(first_step, first_step + steps)
        for start in range(step * STEP_PAIRS, (step + 1) * STEP_PAIRS, micro)
    ]
    started = time.perf_counter()
    for index, chunk in enumerate(chunks):
        if index + 1 < len(chunks):
            data.read_ahead(chunks[index + 1])
        data.batch(chunk, "cpu")
    return steps * STEP_PAIRS / (time.perf_counter() - started)


def measure(way: str, root: Path, model: Path, steps: int, micro: int) -> dict:
    import torch

    from dp2o_core.registry import PluginManager
    from dp2o_core.specs import resolve_spec
    from dp2o_core.store import ProcessInfo, RunStore

    torch.set_num_threads(2)
    backbone = resolve_spec(PluginManager(), "backbone", f"sd2:model={model},device=cpu").build()
    before, before_peak = resident_kb(), resident_kb("VmHWM")
    drop_page_cache(root)
    started = time.perf_counter()
    if way == "dp2o":
        from dp2o_core.training.data import TrainingData

        data = TrainingData(RunStore(root), backbone, seed=0)
    else:
        from object_training_data import ObjectTrainingData

        data = ObjectTrainingData(RunStore(root), backbone, seed=0)
    data.prepare(ProcessInfo())
    data.batch(list(range(micro)), "cpu")
    first = time.perf_counter() - started
    drop_page_cache(root)
    cold = deliver(data, steps, micro, first_step=1)
    deliver(data, steps, micro, first_step=1)  # the same files again: now in the page cache
    warm = deliver(data, steps, micro, first_step=1)
    extra_gb = (max(resident_kb("VmHWM"), before_peak) - before) / 2**20
    return {
        "memory_gb": round(extra_gb, 3),
        "first_batch_s": round(first, 2),
        "cold_pairs_per_s": round(cold),
        "warm_pairs_per_s": round(warm),
        "pairs": len(data),
    }


def in_fresh_process(way: str, root: Path, model: Path, steps: int, micro: int) -> dict:
    command = [sys.executable, __file__, "--way", way, "--run", str(root), "--model", str(model)]
    command += ["--steps", str(steps), "--micro-batch", str(micro)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{way} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=30_000)
    parser.add_argument("--files", type=int, default=128, help="Distinct latent and condition files.")
    parser.add_argument("--steps", type=int, default=4, help="1,024-pair steps per rate measurement.")
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--control-side", type=int, default=512, help="Side of each group's condition image.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds of both ways.")
    parser.add_argument("--no-baseline", action="store_true", help="Measure dp2o only.")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--way", help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.way:
        print(json.dumps(measure(args.way, args.run, args.model, args.steps, args.micro_batch)))
        return
    from tiny_models import save_tiny_sd

    with tempfile.TemporaryDirectory(prefix="dp2o-train-data-") as work:
        root, model = Path(work) / "run", save_tiny_sd(Path(work) / "model")
        started = time.perf_counter()
        build_run(root, args.groups, args.files, args.control_side)
        print(f"built {args.groups:,} groups in {time.perf_counter() - started:.0f} s", flush=True)
        ways = ["dp2o"] if args.no_baseline else ["dp2o", "before"]
        results: dict[str, list[dict]] = {way: [] for way in ways}
        for index in range(args.rounds):
            for way in ways if index % 2 == 0 else ways[::-1]:
                results[way].append(in_fresh_process(way, root, model, args.steps, args.micro_batch))
                print(way, results[way][-1], flush=True)
    keys = ("memory_gb", "first_batch_s", "cold_pairs_per_s", "warm_pairs_per_s")
    summary = {
        way: {k: round(statistics.median(r[k] for r in rows), 3) for k in keys}
        for way, rows in results.items()
    }
    print(
        f"\n{args.groups:,} groups × {CANDIDATES} candidates, {results['dp2o'][0]['pairs']:,} pairs, "
        f"micro-batches of {args.micro_batch}, medians of {args.rounds} rounds"
    )
    print(f"{'':<8}" + "".join(f"{k:>20}" for k in keys))
    for way, figures in summary.items():
        print(f"{way:<8}" + "".join(f"{figures[k]:>20}" for k in keys))
    if "before" in results:
        ratios = {
            key: Ratio.of([b[key] for b in results["before"]], [d[key] for d in results["dp2o"]])
            for key in keys
        }
        summary["before/dp2o"] = {key: ratio.as_dict() for key, ratio in ratios.items()}
        print("before ÷ dp2o (median, min–max): " + ", ".join(f"{k} {r}" for k, r in ratios.items()))
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
