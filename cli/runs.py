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
from dp2o_core.store.sharding import Shard


def open_run(
    ctx: typer.Context,
    run: Path,
    config: RunConfig,
    options: RunOptions | None = None,
    accelerator: Any = None,
    *,
    writes: bool = True,
    shard: Shard | None = None,
) -> RunContext:
    """The :class:`RunContext` of ``run`` for this process; process 0 reports to the terminal.

    A command that ``writes`` takes the run's writer lock in process 0 first, before any
    configuration is resolved or model loaded, and holds it until the command ends: a second
    command on a run that another one is working on stops at once, naming the other's host
    and pid. A run that does not exist yet is locked when it is first written, so a command
    refused by its preflight leaves no folder behind. A ``shard`` job (``--shard K/N``) holds
    the lock shared with the other shard jobs of the run.
    """
    process = ProcessInfo.detect().with_shard(shard)
    store = RunStore(run)

    def claim() -> None:
        lock = store.writer_lock(shared=shard is not None)
        lock.__enter__()
        ctx.call_on_close(lambda: lock.__exit__(None, None, None))  # when the command ends

    deferred = None
    if writes and process.is_main:
        if store.root.exists():
            claim()
        else:
            deferred = claim  # a new run: locked when first written (nothing to protect before)
    return RunContext(
        claim=deferred,
        store=store,
        config=config,
        manager=ctx.ensure_object(CliState).manager,
        process=process,
        reporter=ConsoleReporter(process.is_main),
        options=options or RunOptions(),
        accelerator=accelerator,
    )
