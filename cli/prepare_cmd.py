"""``dp2o prepare``: the data stage — list, load, degrade and store every input once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import typer
from dp2o_cli.options import ConfigFile, DataSpec, DegradationSpec, RunDir, Seed
from dp2o_cli.output import console
from dp2o_cli.progress import stage_progress
from dp2o_cli.run_config import load_run_config, write_run_config
from dp2o_cli.state import CliState
from rich.table import Table

from dp2o_core.errors import UsageError
from dp2o_core.specs import Resolved
from dp2o_core.stages.data import DataStageResult, data_stage_config, run_data_stage
from dp2o_core.store import ProcessInfo, RunStore


def prepare(
    ctx: typer.Context,
    run: RunDir,
    data: DataSpec = None,
    degradation: DegradationSpec = None,
    config_file: ConfigFile = None,
    seed: Seed = None,
    on_bad_image: Annotated[
        Literal["error", "skip"],
        typer.Option("--on-bad-image", help="Stop at an unusable image (error) or skip and list it (skip)."),
    ] = "error",
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Items loaded and degraded together.")
    ] = 16,
) -> None:
    """Load the data set into RUN: LR inputs (degraded from HR where needed) and HR references."""
    manager = ctx.ensure_object(CliState).manager
    config = load_run_config(config_file, run=run, data=data, degradation=degradation, seed=seed)
    if config.data.name is None:
        raise UsageError(
            "no data set given: pass --data SPEC (e.g. --data hr:path=imgs,crop=512) or set data in --config"
        )
    store = RunStore(run)
    process = ProcessInfo.detect()
    resolved = config.resolve(manager, ("data", "degradation"))
    if process.is_main:
        write_run_config(store, config, resolved)
    result = prepare_data(
        store, resolved, config.seed, process, on_bad_image=on_bad_image, batch_size=batch_size
    )
    if not process.is_main:
        return
    status = store.status("data")
    console.print(
        f"data: {status.state} — {status.groups_done}/{status.groups_total} items, "
        f"{result.written} written now, {result.already_done} already done, in {run}"
    )
    if status.rows.get("bad_images"):
        _print_bad_images(store)


def prepare_data(
    store: RunStore,
    resolved: Mapping[str, Resolved],
    seed: int,
    process: ProcessInfo,
    on_bad_image: Literal["error", "skip"] = "error",
    batch_size: int = 16,
) -> DataStageResult:
    """Run the data stage for resolved ``data`` and ``degradation`` components, with progress."""
    dataset = resolved["data"].build()
    degrader = resolved["degradation"].build() if dataset.synthesises_lr else None
    stage_config = data_stage_config(
        dataset, resolved["data"].as_record(), resolved["degradation"].as_record(), seed
    )
    with stage_progress("data", process.is_main) as (start, advance):
        return run_data_stage(
            store,
            dataset,
            stage_config,
            degradation=degrader,
            seed=seed,
            process=process,
            on_bad_image=on_bad_image,
            batch_size=batch_size,
            on_start=start,
            on_progress=advance,
        )


def _print_bad_images(store: RunStore) -> None:
    bad = store.read_table("data", "bad_images").to_pylist()
    table = Table(
        title=f"{len(bad)} skipped images (listed in the run's bad_images table)", title_justify="left"
    )
    table.add_column("File")
    table.add_column("Reason")
    for row in bad:
        table.add_row(row["path"], row["reason"])
    console.print(table)
