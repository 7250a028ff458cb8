"""``dp2o check``: whether everything ``dp2o train`` needs is here — weights, packages, data, disk.

It takes ``dp2o train``'s flags and configuration, resolves every component and lists, per
stage that would work, each requirement: present, to be downloaded on first use, or missing
(with how to get it). Nothing is loaded and nothing is written. On a machine being prepared
for offline work it names every file to copy.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer
from dp2o_cli.output import console, print_json
from dp2o_cli.runs import open_run
from dp2o_cli.state import CliState
from dp2o_cli.train_cmd import default_run_dir, train, train_config, train_pipeline
from rich.markup import escape
from rich.table import Table

from dp2o_core.preflight import Check, format_size

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
STATUS_STYLE = {"present": "green", "download": "yellow", "missing": "bold red"}


def check(ctx: typer.Context, **flags: Any) -> None:
    """List what dp2o train needs with the same flags: present, downloaded on first use, or missing.

    Exits 1 when something is missing. Nothing is loaded or written.
    """
    as_json = flags.pop("as_json")
    config, _ = train_config(manager=ctx.ensure_object(CliState).manager, **flags)
    run_dir = config.run or default_run_dir(config.backbone.name)
    checks = train_pipeline(config).preflight(open_run(ctx, run_dir, config, writes=False))
    ready = all(c.ok for c in checks)
    if as_json:
        print_json({"run": str(run_dir), "ready": ready, "checks": [c.as_record() for c in checks]})
    else:
        console.print(_table(checks, run_dir))
        missing = sum(not c.ok for c in checks)
        downloads = [c for c in checks if c.status == "download"]
        summary = "ready" if ready else f"{missing} missing"
        if downloads:
            summary += f"; {len(downloads)} to download on first use"
        console.print(f"dp2o check: {summary}", markup=False)
    if not ready:
        raise typer.Exit(1)


def _table(checks: list[Check], run_dir: Path) -> Table:
    table = Table(title=f"what dp2o train needs for {escape(str(run_dir))}", title_justify="left")
    for column in ("Component", "Requirement", "Status", "What to do", "Source", "Size"):
        table.add_column(column, overflow="fold")
    for c in checks:
        what = "; ".join(part for part in (c.problem, c.fix) if part)
        table.add_row(
            escape(c.component),
            escape(c.item),
            f"[{STATUS_STYLE[c.status]}]{c.status}[/]",
            escape(what),
            escape(c.source),
            format_size(c.size) if c.size is not None else "",
        )
    return table


# dp2o check takes exactly dp2o train's flags (but --resume, --redo and --on-bad-image), and --json
_train_parameters = [
    p
    for name, p in inspect.signature(train, eval_str=True).parameters.items()
    if name not in ("resume", "redo", "on_bad_image")
]
_json = inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=AsJson)
check.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        *(
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.name != "ctx" else p
            for p in _train_parameters
        ),
        _json,
    ]
)
