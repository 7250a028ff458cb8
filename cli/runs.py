"""Opening a run for a command: the pipeline's context, with the terminal's reporter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from dp2o_cli.progress import ConsoleReporter
from dp2o_cli.state import CliState

from dp2o_core.config import RunConfig
from dp2o_core.pipeline import RunContext, RunOptions
from dp2o_core.store import ProcessInfo, RunStore


def open_run(
    ctx: typer.Context,
    run: Path,
    config: RunConfig,
    options: RunOptions | None = None,
    accelerator: Any = None,
) -> RunContext:
    """The :class:`RunContext` of ``run`` for this process; process 0 reports to the terminal."""
    process = ProcessInfo.detect()
    return RunContext(
        store=RunStore(run),
        config=config,
        manager=ctx.ensure_object(CliState).manager,
        process=process,
        reporter=ConsoleReporter(process.is_main),
        options=options or RunOptions(),
        accelerator=accelerator,
    )
