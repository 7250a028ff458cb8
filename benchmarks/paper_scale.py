"""The data-only stages at the paper's scale and ten times it: wall time and peak memory.

Builds synthetic scores tables of G groups × 64 candidates with the nine metrics of the
paper's hybrid reward (30,000 groups: the paper's data set; 300,000: ten times it), plus a
data and a sample stage without images, then times, each step in a fresh process:

* ``import+pairs r=0.25`` / ``r=0.0625`` — ``dp2o pairs RUN --scores FILE``: streamed import,
  rewards, top-N × bottom-N pairs (SD2's and FLUX's ratios), hierarchical weights, written;
* ``status`` — every stage's status (``dp2o status``);
* ``report statistics`` — the report's reward/gap/weight statistics and chart samples;
* ``export metadata`` — the rows of ``dp2o export`` without reading the image files;

and, for the smallest size, ``dp2o pairs`` as it was before (every row a Python dict,
``benchmarks/per_group_pairs.py``), checking that both write the same pairs, and the
export's rows as they were built before (a dict per pair,
``benchmarks/row_by_row_export.py``), checking that both give the same rows in the same
order.

``python benchmarks/paper_scale.py [--groups 30000 300000] [--repeats 3] [--json]
[--no-baseline]``; the last line of ``--json`` is one JSON object. ``--repeats`` runs
dp2o and the way before alternately at the smallest size (pairs, then the export's rows)
and prints the median speed ratios and their spread. Takes about 30 minutes and 10 GB of
disk on two cores. Peak memory is
each process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAPER_METRICS = (
    "lpips",
    "topiq_fr",
    "afine_fr",
    "maniqa",
    "musiq",
    "clipiqa+",
    "topiq_nr",
    "afine_nr",
    "qalign",
)
CANDIDATES = 64
HERE = Path(__file__).resolve().parent


# -- building the synthetic run ------------------------------------------------------------------
def write_scores(path: Path, groups: int, chunk: int = 10_000) -> None:
    """A scores parquet file, groups in chunks (memory stays that of a chunk)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    writer = None
    for start in range(0, groups, chunk):
        count = min(chunk, groups - start)
        ids = np.repeat([f"img_{g:07d}" for g in range(start, start + count)], CANDIDATES)
        columns = {"group_id": pa.array(ids), "candidate": np.tile(np.arange(CANDIDATES), count)}
        for metric in PAPER_METRICS:  # a few distinct levels, so rewards tie now and then
            columns[metric] = np.round(rng.random(count * CANDIDATES), 3)
        table = pa.table(columns)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def write_upstream(run: Path, groups: int, chunk: int = 20_000) -> None:
    """Data and sample stages with the tables the export reads (no image files)."""
    import numpy as np
    import pyarrow as pa

    from dp2o_core.store import ProcessInfo, RunStore

    store = RunStore(run)
    ids = [f"img_{g:07d}" for g in range(groups)]
    for stage, table in (("data", "groups"), ("sample", "candidates")):
        with store.open_stage(stage, config={"synthetic": groups}, group_ids=ids, process=ProcessInfo()) as w:
            for start in range(0, groups, chunk):
                part = ids[start : start + chunk]
                if table == "groups":
                    n = len(part)
                    rows = pa.table(
                        {
                            "group_id": part, "lr": [f"data/lr/{g}.png" for g in part], "hr": [None] * n,
                            "source_lr": [None] * n, "source_hr": [None] * n, "prompt": [None] * n,
                            "crop_top": np.zeros(n, np.int32), "crop_left": np.zeros(n, np.int32),
                            "lr_height": np.full(n, 128, np.int32), "lr_width": np.full(n, 128, np.int32),
                            "seed": np.zeros(n, np.int64),
                        }
                    )  # fmt: skip
                else:
                    gid = np.repeat(part, CANDIDATES)
                    m = np.tile(np.arange(CANDIDATES), len(part))
                    rows = pa.table(
                        {
                            "group_id": gid, "candidate": m.astype(np.int32), "seed": m.astype(np.int64),
                            "image": [f"sample/images/{g}/{c:03d}.png" for g, c in zip(gid, m, strict=True)],
                            "latent_shard": pa.nulls(len(m), pa.string()),
                            "latent_index": pa.nulls(len(m), pa.int32()),
                        }
                    )  # fmt: skip
                w.add_block(part, **{table: rows})


# -- the measured steps, each run in its own process -------------------------------------------------
def _components(ratio: float):
    from dp2o_core.registry import PluginManager
    from dp2o_core.specs import resolve_spec

    manager = PluginManager()
    reward = resolve_spec(
        manager, "reward", f"hybrid:fr=[lpips,topiq_fr,afine_fr],nr=[{','.join(PAPER_METRICS[3:])}]"
    )
    selector = resolve_spec(manager, "selector", f"ratio:ratio={ratio}")
    weighting = resolve_spec(manager, "weighting", "hierarchical")
    config = {
        k: r.as_record() for k, r in (("reward", reward), ("selector", selector), ("weighting", weighting))
    }
    return reward.build(), selector.build(), weighting.build(), config


def step(name: str, run: Path, scores: Path, ratio: float) -> dict:
    """Run one measured step in this process; returns its result (wall time added by the caller)."""
    from dp2o_core.store import RunStore

    store = RunStore(run)
    if name == "pairs":
        from dp2o_core.stages.pairs import import_scores, make_pairs

        reward, selector, weighting, config = _components(ratio)
        import_scores(store, scores)
        summary = make_pairs(store, reward, selector, weighting, config).summary
        return {"pairs": summary.pairs}
    if name == "baseline":
        sys.path.insert(0, str(HERE))
        from per_group_pairs import per_group_stage

        reward, selector, weighting, config = _components(ratio)
        return {"pairs": per_group_stage(store, scores, reward, selector, weighting, config).pairs}
    if name == "status":
        return {"states": [s.state for s in store.statuses()]}
    if name == "report":
        from dp2o_core.report.facts import pair_facts

        facts = pair_facts(store)
        return {"pairs": facts.pairs, "weight_mean": facts.weights.mean}
    if name == "export":
        from dp2o_core.export_rows import pair_columns

        return export_checksum(
            (t.column("label_0").to_numpy(), t.column("candidate_0").to_numpy()) for t in pair_columns(store)
        )
    if name == "export-baseline":
        import numpy as np

        sys.path.insert(0, str(HERE))
        from row_by_row_export import row_by_row

        return export_checksum(
            (np.array([r["label_0"] for r in rows]), np.array([r["candidate_0"] for r in rows]))
            for rows in row_by_row(store)
        )
    raise SystemExit(f"unknown step {name}")


def export_checksum(blocks) -> dict:
    """Rows, how many put the winner first, and an order-sensitive sum of column 0's
    candidates: equal for two ways of building the export only if they agree row by row."""
    import numpy as np

    rows = first = checksum = 0
    for label, candidate in blocks:
        position = np.arange(rows, rows + len(label)) % 1009 + 1
        checksum += int((candidate.astype(np.int64) * position).sum())
        first += int(label.sum())
        rows += len(label)
    return {"rows": rows, "winner_first": first, "checksum": checksum}


def peak_kb() -> int:
    """This process's peak resident memory (VmHWM; ru_maxrss would carry over the parent's
    peak across exec on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(name: str, run: Path, scores: Path, ratio: float = 0.25) -> dict:
    """One step in a fresh process: wall seconds, peak resident memory (GB) and its result."""
    command = [
        sys.executable,
        __file__,
        "--step",
        name,
        "--run",
        str(run),
        "--scores",
        str(scores),
        "--ratio",
        str(ratio),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"step {name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"seconds": round(seconds, 2), "peak_gb": round(result.pop("peak_kb") / 2**20, 3), **result}


def same_pairs(a: Path, b: Path) -> bool:
    """Whether two runs hold the same pairs (sorted, every column)."""
    from dp2o_core.store import RunStore

    keys = [("group_id", "ascending"), ("winner", "ascending"), ("loser", "ascending")]
    left = RunStore(a).read_table("pairs", "pairs").sort_by(keys)
    right = RunStore(b).read_table("pairs", "pairs").sort_by(keys)
    return left.equals(right)


def interleaved(groups: int, work: Path, scores: Path, repeats: int) -> dict:
    """dp2o then the way before, alternately ``repeats`` times, for import+pairs r=0.25 and
    for the export's rows: the median ratios and their spread (machines here are shared; one
    run of each swings)."""
    import statistics

    def summary(ratios: list[float], memory: list[float]) -> dict:
        return {
            "repeats": repeats,
            "speed_ratio_median": round(statistics.median(ratios), 2),
            "speed_ratio_min": round(min(ratios), 2),
            "speed_ratio_max": round(max(ratios), 2),
            "memory_ratio_median": round(statistics.median(memory), 2),
        }

    pairs: tuple[list[float], list[float]] = ([], [])
    export: tuple[list[float], list[float]] = ([], [])
    for index in range(repeats):
        new, old = work / f"ab-new-{index}", work / f"ab-old-{index}"
        ours = measure("pairs", new, scores, 0.25)
        theirs = measure("baseline", old, scores, 0.25)
        pairs[0].append(theirs["seconds"] / ours["seconds"])
        pairs[1].append(theirs["peak_gb"] / ours["peak_gb"])
        write_upstream(new, groups)  # (after: with a sample stage, dp2o's pairs stage checks it too)
        ours = measure("export", new, scores)
        theirs = measure("export-baseline", new, scores)
        export[0].append(theirs["seconds"] / ours["seconds"])
        export[1].append(theirs["peak_gb"] / ours["peak_gb"])
        shutil.rmtree(new)
        shutil.rmtree(old)
    return {"import+pairs": summary(*pairs), "export metadata": summary(*export)}


def benchmark(groups: int, work: Path, baseline: bool, repeats: int = 1) -> dict:
    scores = work / f"scores-{groups}.parquet"
    write_scores(scores, groups)
    results: dict = {}
    for ratio in (0.25, 0.0625):
        run = work / f"run-{groups}-{ratio}"
        write_upstream(run, groups)
        results[f"import+pairs r={ratio}"] = measure("pairs", run, scores, ratio)
    run = work / f"run-{groups}-0.25"
    results["status"] = measure("status", run, scores)
    results["report statistics"] = measure("report", run, scores)
    results["export metadata"] = measure("export", run, scores)
    if baseline:
        for ratio in (0.25, 0.0625):
            before = work / f"baseline-{groups}-{ratio}"
            results[f"before: import+pairs r={ratio}"] = measure("baseline", before, scores, ratio)
            results[f"before: import+pairs r={ratio}"]["same_pairs"] = same_pairs(
                before, work / f"run-{groups}-{ratio}"
            )
            shutil.rmtree(before)
        before = measure("export-baseline", run, scores)
        before["same_rows"] = {k: before[k] for k in ("rows", "winner_first", "checksum")} == {
            k: results["export metadata"][k] for k in ("rows", "winner_first", "checksum")
        }
        results["before: export metadata"] = before
        if repeats > 1:
            results["before / dp2o, interleaved"] = interleaved(groups, work, scores, repeats)
    for ratio in (0.25, 0.0625):
        shutil.rmtree(work / f"run-{groups}-{ratio}")
    scores.unlink()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, nargs="+", default=[30_000, 300_000])
    parser.add_argument("--json", action="store_true", help="End with one JSON line of every figure.")
    parser.add_argument("--no-baseline", action="store_true", help="Skip the per-group implementation.")
    parser.add_argument(
        "--repeats", type=int, default=3, help="Interleaved dp2o / per-group runs for the speed ratio."
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="Folder for the synthetic runs (default: a temp one)."
    )
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scores", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ratio", type=float, default=0.25, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        result = step(args.step, args.run, args.scores, args.ratio)
        result["peak_kb"] = peak_kb()
        print(json.dumps(result))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="dp2o-paper-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    figures = {}
    for index, groups in enumerate(sorted(args.groups)):
        figures[groups] = benchmark(groups, work, not args.no_baseline and index == 0, args.repeats)
        print(f"\n{groups:,} groups × {CANDIDATES} candidates × {len(PAPER_METRICS)} metrics")
        print(f"{'step':<30} {'wall s':>8} {'peak GB':>8}  result")
        for name, figure in figures[groups].items():
            extra = {k: v for k, v in figure.items() if k not in ("seconds", "peak_gb")}
            if "seconds" not in figure:
                print(f"{name:<30} {'':>8} {'':>8}  {extra}")
                continue
            print(f"{name:<30} {figure['seconds']:>8.1f} {figure['peak_gb']:>8.2f}  {extra}")
    sizes = sorted(figures)
    if len(sizes) > 1:
        small, large = figures[sizes[0]]["import+pairs r=0.25"], figures[sizes[-1]]["import+pairs r=0.25"]
        time_ratio = large["seconds"] / small["seconds"]
        memory_ratio = large["peak_gb"] / small["peak_gb"]
        print(
            f"\nimport+pairs r=0.25, {sizes[-1]:,} vs {sizes[0]:,} groups: "
            f"time ×{time_ratio:.1f}, peak memory ×{memory_ratio:.2f}"
        )
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({str(k): v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
