"""``dp2o pairs``: rewards, preference pairs and their weights from a scores table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from dp2o_cli.options import ConfigFile, RewardSpec, RunDir, SelectorSpec, WeightingSpec
from dp2o_cli.output import console
from dp2o_cli.run_config import load_run_config
from dp2o_cli.runs import open_run
from rich.markup import escape
from rich.table import Table

from dp2o_core.config import recorded_config
from dp2o_core.pipeline import Pipeline
from dp2o_core.store import RunStore

ScoresFile = Annotated[
    Path | None,
    typer.Option(
        "--scores", metavar="FILE", help="Use a scores table written by another tool (parquet or CSV)."
    ),
]


def pairs(
    ctx: typer.Context,
    run: RunDir,
    reward: RewardSpec = None,
    selector: SelectorSpec = None,
    weighting: WeightingSpec = None,
    config_file: ConfigFile = None,
    scores: ScoresFile = None,
) -> None:
    """Compute rewards, pairs and weights for RUN from its raw scores (no rescoring).

    Without flags it uses the reward, selector and weighting the run recorded.
    """
    # without flags or --config: the reward, selector and weighting the run recorded
    base = recorded_config(RunStore(run)) if config_file is None else None
    config = load_run_config(
        config_file, base=base, run=run, reward=reward, selector=selector, weighting=weighting
    )
    context = open_run(ctx, run, config)
    if not context.process.is_main:
        return  # the inter-group weight needs every group: process 0 does it alone
    pipeline = Pipeline.method().select("pairs")
    pipeline.resolve(context)  # a misspelt selector fails before anything is imported
    if scores is not None:
        from dp2o_core.stages.pairs import import_scores  # numpy: not at start-up

        context.claim_run()
        import_scores(context.store, scores)
    made = pipeline.run(context, announce=False, force=["pairs"])["pairs"]
    assert made is not None  # forced
    console.print(_summary_table(made.result.summary, run))


def _summary_table(summary: Any, run: Path) -> Table:
    table = Table(title=f"pairs of {escape(str(run))}", title_justify="left")
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
