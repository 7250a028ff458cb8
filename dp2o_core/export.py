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
per pair, so the preferred image is not always in the same column. The rows are built
column by column (:mod:`dp2o_core.export_rows`); reading the image files is the rest.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dp2o_core.errors import Dp2oError, UsageError
from dp2o_core.export_rows import pair_columns
from dp2o_core.store import RunStore

FORMATS = ("hf",)


def export_pairs(store: RunStore, out: Path, format: str = "hf", images_per_write: int = 512) -> int:
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
        from datasets.arrow_writer import ArrowWriter
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

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        table_file = work / "pairs.arrow"
        with ArrowWriter(features=features, path=str(table_file)) as writer:
            for rows in pair_columns(store, scratch=work):
                for start in range(0, rows.num_rows, images_per_write):
                    writer.write_table(_with_image_bytes(store, rows.slice(start, images_per_write)))
            writer.finalize()
        dataset = datasets.Dataset.from_file(str(table_file), info=datasets.DatasetInfo(features=features))
        dataset.save_to_disk(str(work / "dataset"))
        del dataset
        if out.exists():
            out.rmdir()
        os.replace(work / "dataset", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return count


def _with_image_bytes(store: RunStore, rows: Any) -> Any:
    """``rows`` with its image paths replaced by the files' bytes (jpg_0, jpg_1, lr)."""
    import pyarrow as pa

    def read(stage: str, column: str) -> Any:
        groups, paths = rows.column("group_id").to_pylist(), rows.column(column).to_pylist()
        return pa.array(
            [store.load_group_file(stage, g, p, Path.read_bytes) for g, p in zip(groups, paths, strict=True)],
            type=pa.binary(),
        )

    images = {
        "jpg_0": read("sample", "path_0"),
        "jpg_1": read("sample", "path_1"),
        "lr": read("data", "path_lr"),
    }
    kept = rows.drop_columns(["path_0", "path_1", "path_lr"])
    return pa.table({**images, **{name: kept.column(name) for name in kept.column_names}})
