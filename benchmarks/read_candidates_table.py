"""How long reading a run store's candidates table of one million rows takes.

Builds a run store whose ``sample`` stage holds G groups × M candidates (default
62,500 × 16 = 1,000,000 rows) committed in batches as a real run commits them, then times

* dp2o's reader (``RunStore.read_table``: union of the committed parts, duplicate guard),
* the same rows read from one monolithic parquet file (the naive lower bound),
* dp2o's reader for two columns only, and the set of done groups (what a resume reads),

and prints the times and the ratio. Nothing here touches an image::

    python benchmarks/read_candidates_table.py [--groups 62500] [--candidates 16] [--flush 256]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dp2o_core.store import ProcessInfo, RunStore


def build(root: Path, groups: int, candidates: int, flush: int) -> RunStore:
    """A run store with a done data stage and a sample stage of groups × candidates rows."""
    store = RunStore(root)
    ids = [f"train/{i:07d}" for i in range(groups)]
    with store.open_stage(
        "data", config={"bench": 1}, group_ids=ids, process=ProcessInfo(), flush_every=flush
    ) as w:
        for group in w.todo:
            w.add_group(
                group,
                groups=[
                    {
                        "lr": f"data/lr/{group}.png",
                        "crop_top": 0,
                        "crop_left": 0,
                        "lr_height": 128,
                        "lr_width": 128,
                        "seed": 0,
                    }
                ],
            )
    with store.open_stage(
        "sample", config={"bench": 1}, group_ids=ids, process=ProcessInfo(), flush_every=flush
    ) as w:
        for group in w.todo:
            w.add_group(
                group,
                candidates=[
                    {
                        "candidate": k,
                        "seed": k,
                        "image": f"sample/images/{group}/{k:03d}.png",
                        "latent_shard": f"sample/latents/{group}.safetensors",
                        "latent_index": k,
                    }
                    for k in range(candidates)
                ],
            )
    return store


def timed(function, repeats: int = 5) -> tuple[float, object]:
    """Median seconds over ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=62_500)
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--flush", type=int, default=256, help="groups per commit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        store = build(Path(tmp) / "run", args.groups, args.candidates, args.flush)
        built = time.perf_counter() - start
        commits = len(store.commits("sample"))
        whole, table = timed(lambda: store.read_table("sample", "candidates"))
        monolith = Path(tmp) / "candidates.parquet"
        pq.write_table(table, monolith)
        naive, _ = timed(lambda: pq.read_table(monolith))
        narrow, _ = timed(lambda: store.read_table("sample", "candidates", columns=["group_id", "candidate"]))
        done, groups_done = timed(lambda: store.done_groups("sample"))
        assert isinstance(table, pa.Table) and table.num_rows == args.groups * args.candidates
        assert len(groups_done) == args.groups
    print(f"rows {table.num_rows:,} in {commits} commits (built in {built:.1f} s)")
    print(f"dp2o read_table, all columns     {whole:7.3f} s")
    print(f"one parquet file, all columns    {naive:7.3f} s")
    print(f"dp2o / single file               {whole / naive:7.2f} ×")
    print(f"dp2o read_table, 2 columns       {narrow:7.3f} s")
    print(f"done groups (resume check)       {done:7.3f} s")


if __name__ == "__main__":
    main()
