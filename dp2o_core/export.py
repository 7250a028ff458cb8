"""Export a run's preference pairs for other DPO trainers.

``hf``: a Hugging Face ``datasets`` dataset (``save_to_disk`` layout, read back with
``datasets.load_from_disk``) in the Pick-a-Pic layout that Diffusion-DPO trainers read:

============  ==========================================================================
jpg_0, jpg_1  the two candidates' image files as bytes (dp2o stores PNG: lossless; the
              column names are Pick-a-Pic's, and PIL opens either format)
label_0       1.0 when jpg_0 is the preferred image, 0.0 when jpg_1 is
caption       the group's prompt ("" when it has none)
============  ==========================================================================

plus what SR and weighted DPO need: ``lr`` (the LR input's bytes), ``group_id``, ``weight``
(the hierarchical weight), ``intra_weight``, ``inter_weight``, ``reward_0``/``reward_1``
and ``candidate_0``/``candidate_1``. Which image is jpg_0 is a fixed pseudo-random choice
per pair, so the preferred image is not always in the same column.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dp2o_core.errors import Dp2oError, UsageError
from dp2o_core.store import RunStore
from dp2o_core.store.fingerprint import derive_seed

FORMATS = ("hf",)


def export_pairs(store: RunStore, out: Path, format: str = "hf") -> int:
    """Write the pairs of a run to ``out``; returns how many pairs were written."""
    if format not in FORMATS:
        raise UsageError(f"unknown export format {format!r} (known: {', '.join(FORMATS)})")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file; OUT must be a new folder (nothing was written)")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty; choose a new folder (nothing was written)")
    if store.status("pairs").state != "done":
        raise Dp2oError(
            f"run {store.root} has no finished pairs stage ({store.status('pairs').state}); "
            "run `dp2o pairs` or `dp2o train` first"
        )
    count = store.status("pairs").rows.get("pairs", 0)
    try:
        import datasets
    except ImportError:
        raise Dp2oError(
            "exporting to the hf format needs the datasets package: pip install datasets"
        ) from None
    # dp2o shows its own progress; datasets' bars would print beside it on stderr
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()
    features = datasets.Features(
        {
            "jpg_0": datasets.Value("binary"),
            "jpg_1": datasets.Value("binary"),
            "label_0": datasets.Value("float64"),
            "caption": datasets.Value("string"),
            "lr": datasets.Value("binary"),
            "group_id": datasets.Value("string"),
            "candidate_0": datasets.Value("int32"),
            "candidate_1": datasets.Value("int32"),
            "reward_0": datasets.Value("float64"),
            "reward_1": datasets.Value("float64"),
            "weight": datasets.Value("float64"),
            "intra_weight": datasets.Value("float64"),
            "inter_weight": datasets.Value("float64"),
        }
    )

    def read(stage: str, row: dict[str, Any], key: str) -> bytes:
        return store.load_group_file(stage, row["group_id"], row[key], Path.read_bytes)

    def generate():
        for row in (row for block in pair_rows(store) for row in block):
            yield {
                **{k: v for k, v in row.items() if not k.startswith("path_")},
                "jpg_0": read("sample", row, "path_0"),
                "jpg_1": read("sample", row, "path_1"),
                "lr": read("data", row, "path_lr"),
            }

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        try:
            dataset = datasets.Dataset.from_generator(
                generate, features=features, cache_dir=str(work / "cache"), keep_in_memory=False
            )
        except Exception as error:
            cause: BaseException | None = error
            while cause is not None and not isinstance(cause, Dp2oError):
                cause = cause.__cause__ or cause.__context__
            if cause is not None:  # datasets wraps what the generator raised
                raise cause from None
            raise
        dataset.save_to_disk(str(work / "dataset"))
        del dataset
        if out.exists():
            out.rmdir()
        os.replace(work / "dataset", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return count


def pair_rows(store: RunStore, block_rows: int = 100_000) -> Iterator[list[dict[str, Any]]]:
    """The export's rows (with the image paths to read), a block of whole groups at a time.

    Order: the pairs stage's commits in turn, and within one by group, winner, loser — fixed
    for a run. Memory holds one block of pairs and the candidates of its groups, however
    many pairs the run has.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    groups = {
        r["group_id"]: r
        for r in store.read_table("data", "groups", columns=["group_id", "lr", "prompt"]).to_pylist()
    }
    for block in store.iter_table_blocks("pairs", "pairs", min_rows=1):  # one commit at a time
        block = block.sort_by([("group_id", "ascending"), ("winner", "ascending"), ("loser", "ascending")])
        ids = pc.unique(block.column("group_id"))
        found = store.read_table(
            "sample", "candidates", ["group_id", "candidate", "image"], filter=ds.field("group_id").isin(ids)
        ).to_pylist()
        images = {(r["group_id"], int(r["candidate"])): r["image"] for r in found}
        for start in range(0, block.num_rows, block_rows):  # Python rows for a slice at a time
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
