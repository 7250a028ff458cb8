"""``dp2o report``: (re)write a run's ``report.html``."""

from __future__ import annotations

from dp2o_cli.options import RunDir
from dp2o_cli.output import console

from dp2o_core.errors import UsageError
from dp2o_core.report import write_report
from dp2o_core.store import RunStore


def report(run: RunDir) -> None:
    """Write RUN/report.html: configuration, stage times, rewards, pairs, training curves, evaluation."""
    if not (run / "config.json").exists() and not any(run.glob("*/stage.json")):
        raise UsageError(f"{run} is not a dp2o run directory (no config.json and no stage records)")
    path = write_report(RunStore(run))
    console.print(f"report: {path}", soft_wrap=True, markup=False)
