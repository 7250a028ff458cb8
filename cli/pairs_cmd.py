"""``dp2o pairs``: rewards, preference pairs and their weights from a scores table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from dp2o_cli.options import ConfigFile, RewardSpec, RunDir, SelectorSpec, WeightingSpec
from dp2o_cli.output import console
from dp2o_cli.run_config import load_run_config, write_run_config
from dp2o_cli.state import CliState
from rich.table import Table

from dp2o_core.store import ProcessInfo, RunStore


def pairs(
    ctx: typer.Context,
    run: RunDir,
    reward: RewardSpec = None,
    selector: SelectorSpec = None,
    weighting: WeightingSpec = None,
    config_file: ConfigFile = None,
    scores: Annotated[
        Path | None,
        typer.Option(
            "--scores", metavar="FILE", help="Use a scores table written by another tool (parquet or CSV)."
        ),
    ] = None,
) -> None:
    """Compute rewards, pairs and weights for RUN from its raw scores (no rescoring)."""
    if not ProcessInfo.detect().is_main:
        return  # the inter-group weight needs every group: process 0 does it alone
    manager = ctx.ensure_object(CliState).manager
    config = load_run_config(config_file, run=run, reward=reward, selector=selector, weighting=weighting)
    resolved = config.resolve(manager, ("reward", "selector", "weighting"))
    components = {key: item.build() for key, item in resolved.items()}
    store = RunStore(run)
    from dp2o_core.stages.pairs import import_scores, make_pairs, pairs_stage_config  # numpy: not at start-up

    if scores is not None:
        import_scores(store, scores)
    stage_config = pairs_stage_config({key: item.as_record() for key, item in resolved.items()})
    result = make_pairs(
        store, components["reward"], components["selector"], components["weighting"], stage_config
    )
    write_run_config(store, config, resolved)
    console.print(_summary_table(result.summary, run))


def _summary_table(summary: Any, run: Path) -> Table:
    table = Table(title=f"pairs of {run}", title_justify="left")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("groups", f"{summary.groups}")
    table.add_row("pairs", f"{summary.pairs}")
    table.add_row(
        "weight mean / min / max",
        f"{summary.weight_mean:.4f} / {summary.weight_min:.4f} / {summary.weight_max:.4f}",
    )
    table.add_row(
        "reward gap mean / min / max",
        f"{summary.gap_mean:.4f} / {summary.gap_min:.4f} / {summary.gap_max:.4f}",
    )
    if summary.groups_without_pairs:
        table.add_row("groups the selector gave no pairs", f"{summary.groups_without_pairs}")
    return table
