"""The export's rows as dp2o built them before they were columnar: a Python dict per pair,
the swap decision through ``derive_seed`` one pair at a time.

Kept as the baseline that ``benchmarks/paper_scale.py`` measures ``pair_columns`` against,
and the reference that ``tests/test_export.py`` compares its rows with (same rows, same
order, same column choice).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dp2o_core.errors import Dp2oError
from dp2o_core.store import RunStore
from dp2o_core.store.fingerprint import derive_seed


def row_by_row(store: RunStore, block_rows: int = 100_000) -> Iterator[list[dict[str, Any]]]:
    """The export's rows, one pairs commit at a time, sorted by group, winner, loser."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    groups = {
        r["group_id"]: r
        for r in store.read_table("data", "groups", columns=["group_id", "lr", "prompt"]).to_pylist()
    }
    for block in store.iter_table_blocks("pairs", "pairs", min_rows=1):
        block = block.sort_by([("group_id", "ascending"), ("winner", "ascending"), ("loser", "ascending")])
        ids = pc.unique(block.column("group_id"))
        found = store.read_table(
            "sample", "candidates", ["group_id", "candidate", "image"], filter=ds.field("group_id").isin(ids)
        ).to_pylist()
        images = {(r["group_id"], int(r["candidate"])): r["image"] for r in found}
        for start in range(0, block.num_rows, block_rows):
            yield [_row(pair, images, groups) for pair in block.slice(start, block_rows).to_pylist()]


def _row(pair: dict[str, Any], images: dict[tuple[str, int], str], groups: dict[str, Any]) -> dict[str, Any]:
    group_id, winner, loser = pair["group_id"], int(pair["winner"]), int(pair["loser"])
    for candidate in (winner, loser):
        if (group_id, candidate) not in images:
            raise Dp2oError(f"candidate {candidate} of group {group_id!r} has no image in the sample stage")
    swap = derive_seed(0, "export", group_id, winner, loser) % 2 == 1
    first, second = (loser, winner) if swap else (winner, loser)
    rewards = {winner: pair["winner_reward"], loser: pair["loser_reward"]}
    return {
        "label_0": 0.0 if swap else 1.0,
        "caption": groups[group_id].get("prompt") or "",
        "group_id": group_id,
        "candidate_0": first,
        "candidate_1": second,
        "reward_0": float(rewards[first]),
        "reward_1": float(rewards[second]),
        "weight": float(pair["weight"]),
        "intra_weight": float(pair["intra_weight"]),
        "inter_weight": float(pair["inter_weight"]),
        "path_0": images[(group_id, first)],
        "path_1": images[(group_id, second)],
        "path_lr": groups[group_id]["lr"],
    }
