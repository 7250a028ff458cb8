"""The columnar export gives exactly the rows the row-by-row export gave, and names what is missing."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dp2o_core.errors import Dp2oError
from dp2o_core.export_rows import pair_columns, swap_flags
from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec
from dp2o_core.stages.pairs import import_scores, make_pairs
from dp2o_core.store import ProcessInfo, RunStore
from dp2o_core.store.fingerprint import derive_seed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from row_by_row_export import row_by_row  # noqa: E402  (the export's rows before they were columnar)


def _synthetic_run(root: Path, groups: int = 40) -> RunStore:
    """Data and sample tables without image files (paths only), scores imported, pairs made."""
    rng = np.random.default_rng(7)
    ids = [f"photo {g:02d}/é{g % 3}" for g in range(groups)]
    sizes = {g: 12 if i % 4 else 9 for i, g in enumerate(ids)}
    store = RunStore(root)
    with store.open_stage("data", config={"synthetic": 1}, group_ids=ids, process=ProcessInfo()) as w:
        n = len(ids)
        w.add_block(
            ids,
            groups=pa.table(
                {
                    "group_id": ids, "lr": [f"data/lr/{i}.png" for i in range(n)], "hr": [None] * n,
                    "source_lr": [None] * n, "source_hr": [None] * n,
                    "prompt": [None if i % 3 else f"a photo number {i}" for i in range(n)],
                    "crop_top": np.zeros(n, np.int32), "crop_left": np.zeros(n, np.int32),
                    "lr_height": np.full(n, 32, np.int32), "lr_width": np.full(n, 32, np.int32),
                    "seed": np.zeros(n, np.int64),
                }
            ),
        )  # fmt: skip
    with store.open_stage("sample", config={"synthetic": 1}, group_ids=ids, process=ProcessInfo()) as w:
        for start in range(0, groups, 7):  # several commits
            part = ids[start : start + 7]
            keys = [(g, c) for g in part for c in range(sizes[g])]
            w.add_block(
                part,
                candidates=pa.table(
                    {
                        "group_id": [g for g, _ in keys], "candidate": [c for _, c in keys],
                        "seed": [c for _, c in keys],
                        "image": [f"sample/images/{ids.index(g)}/{c:03d}.png" for g, c in keys],
                        "latent_shard": pa.nulls(len(keys), pa.string()),
                        "latent_index": pa.nulls(len(keys), pa.int32()),
                    }
                ),
            )  # fmt: skip
    metrics = ("fsim", "vsi", "gmsd", "niqe", "piqe")  # the hybrid-offline reward's
    scores = {"group_id": [], "candidate": [], **{m: [] for m in metrics}}
    for g in ids:
        for c in range(sizes[g]):
            scores["group_id"].append(g)
            scores["candidate"].append(c)
            for metric in metrics:
                scores[metric].append(float(rng.integers(0, 5)) / 4)
    pq.write_table(pa.table(scores), root.parent / "scores.parquet")
    import_scores(store, root.parent / "scores.parquet", rows_per_part=60)

    manager = PluginManager()
    specs = (
        ("reward", "hybrid-offline"),
        ("selector", "ratio:ratio=0.25"),
        ("weighting", "hierarchical"),
    )
    parts = [resolve_spec(manager, kind, spec) for kind, spec in specs]
    make_pairs(store, *(p.build() for p in parts), {"test": 1}, block_rows=100)
    return store


def test_columnar_rows_equal_the_row_by_row_export(tmp_path, monkeypatch):
    from dp2o_core import export_rows

    store = _synthetic_run(tmp_path / "run")
    assert len(store.commits("pairs")) > 1
    old = [row for rows in row_by_row(store) for row in rows]
    for block_pairs in (1, 50, 10**9):  # a commit per block, a few commits, everything at once
        new = [row for table in pair_columns(store, block_pairs=block_pairs) for row in table.to_pylist()]
        assert new == old
    monkeypatch.setattr(export_rows, "PARALLEL_PAIRS", 20)  # hashed by spawned worker processes too
    new = [row for table in pair_columns(store, block_pairs=100, cores=3) for row in table.to_pylist()]
    assert new == old
    labels = [row["label_0"] for row in old]
    assert 0.3 < sum(labels) / len(labels) < 0.7  # the preferred image is in either column


def test_swap_flags_are_derive_seeds_lowest_bit(monkeypatch):
    from dp2o_core import export_rows

    monkeypatch.setattr(export_rows, "PARALLEL_PAIRS", 1)
    rng = np.random.default_rng(3)
    ids = ["a", "b", "ü/ß 1", "x" * 80]  # a message longer than one SHA-256 block too
    group_of_pair = np.sort(rng.integers(0, len(ids), 500))
    winner, loser = rng.integers(0, 2000, 500), rng.integers(0, 2000, 500)
    want = [
        derive_seed(0, "export", ids[g], w, lo) % 2 == 1
        for g, w, lo in zip(group_of_pair, winner.tolist(), loser.tolist(), strict=True)
    ]
    assert swap_flags(ids, group_of_pair, winner, loser).tolist() == want
    with ThreadPoolExecutor(4) as pool:  # slices of whole groups, however many
        for cores in (2, 3, 5, 9):
            assert swap_flags(ids, group_of_pair, winner, loser, pool, cores).tolist() == want


def test_a_pair_whose_candidate_has_no_image_is_named(tmp_path, monkeypatch):
    store = _synthetic_run(tmp_path / "run")
    pair = store.read_table("pairs", "pairs").to_pylist()[5]
    group, candidate = pair["group_id"], pair["loser"]
    iter_table_blocks = RunStore.iter_table_blocks

    def without_that_image(self, stage, table, columns=None, min_rows=1_000_000):
        for rows in iter_table_blocks(self, stage, table, columns, min_rows):
            if table == "candidates":
                keys = zip(
                    rows.column("group_id").to_pylist(), rows.column("candidate").to_pylist(), strict=True
                )
                rows = rows.filter(pa.array([(g, c) != (group, candidate) for g, c in keys]))
            yield rows

    monkeypatch.setattr(RunStore, "iter_table_blocks", without_that_image)
    with pytest.raises(Dp2oError, match=rf"candidate {candidate} of group {group!r} has no image"):
        list(pair_columns(store))
