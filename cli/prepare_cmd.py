"""``dp2o prepare``: the data stage — list, load, degrade and store every input once."""

from __future__ import annotations

from typing import Annotated

import typer
from dp2o_cli.options import ConfigFile, DataSpec, DegradationSpec, OnBadImage, PrompterSpec, RunDir, Seed
from dp2o_cli.output import console
from dp2o_cli.run_config import load_run_config
from dp2o_cli.runs import open_run
from rich.markup import escape
from rich.table import Table

from dp2o_core.errors import UsageError
from dp2o_core.pipeline import Pipeline, RunOptions
from dp2o_core.store import RunStore

DataBatchSize = Annotated[
    int, typer.Option("--batch-size", min=1, help="Items loaded and degraded together.")
]


def prepare(
    ctx: typer.Context,
    run: RunDir,
    data: DataSpec = None,
    degradation: DegradationSpec = None,
    prompter: PrompterSpec = None,
    config_file: ConfigFile = None,
    seed: Seed = None,
    on_bad_image: OnBadImage = "error",
    batch_size: DataBatchSize = 16,
) -> None:
    """Load the data set into RUN: LR inputs (degraded from HR where needed) and HR references."""
    config = load_run_config(
        config_file, run=run, data=data, degradation=degradation, prompter=prompter, seed=seed
    )
    if config.data.name is None:
        raise UsageError(
            "no data set given: pass --data SPEC (e.g. --data hr:path=imgs,crop=512) or set data in --config"
        )
    options = RunOptions(on_bad_image=on_bad_image, data_batch_size=batch_size)
    context = open_run(ctx, run, config, options)
    done = Pipeline.method().select("data").run(context, announce=False)["data"]
    if not context.process.is_main:
        return
    status = context.store.status("data")
    written, already_done = (
        (done.result.written, done.result.already_done) if done else (0, status.groups_done)
    )
    console.print(
        f"data: {status.state} — {status.groups_done}/{status.groups_total} items, "
        f"{written} written now, {already_done} already done, in {run}",
        markup=False,
    )
    if status.rows.get("bad_images"):
        _print_bad_images(context.store)


def _print_bad_images(store: RunStore) -> None:
    bad = store.read_table("data", "bad_images").to_pylist()
    table = Table(
        title=f"{len(bad)} skipped images (listed in the run's bad_images table)", title_justify="left"
    )
    table.add_column("File")
    table.add_column("Reason")
    for row in bad:
        table.add_row(escape(row["path"]), escape(row["reason"]))
    console.print(table)
