"""``dp2o export``: a run's preference pairs as a dataset other DPO trainers read."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from dp2o_cli.options import RunDir
from dp2o_cli.output import console

from dp2o_core.export import export_pairs
from dp2o_core.store import RunStore


def export(
    run: RunDir,
    out: Annotated[Path, typer.Argument(metavar="OUT", help="Folder to create for the dataset.")],
    format: Annotated[
        Literal["hf"],
        typer.Option("--format", help="hf: Hugging Face datasets, Pick-a-Pic layout (load_from_disk)."),
    ] = "hf",
) -> None:
    """Write RUN's pairs to OUT (jpg_0, jpg_1, label_0, caption, lr, group_id, weight, …)."""
    count = export_pairs(RunStore(run), out, format)
    console.print(f"export: {count} pairs → {out} (datasets.load_from_disk({str(out)!r}))", markup=False)
