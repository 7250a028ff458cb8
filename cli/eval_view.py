"""An evaluation as a table on the terminal (``dp2o eval``, ``dp2o train``'s held-out stage)."""

from __future__ import annotations

from dp2o_cli.output import console
from rich.markup import escape
from rich.table import Table

from dp2o_core.evaluation import Evaluation, Stat

#: How metrics are labelled in tables where the pyiqa name is not what readers know.
LABELS = {"psnry": "PSNR-Y", "ssim": "SSIM-Y"}


def print_evaluation(evaluation: Evaluation, title: str) -> None:
    """A table: one row per metric and reward column, one column per model (+ difference)."""
    table = Table(title=escape(title), title_justify="left")
    table.add_column("metric")
    for model in evaluation.models:
        table.add_column(f"{escape(model.label)}\n{escape(model.spec)}", overflow="fold")
    if len(evaluation.models) == 2:
        table.add_column("difference")
    seeds = evaluation.seeds

    def cell(stat: Stat) -> str:
        return f"{stat.mean:.4g} ± {stat.std:.2g}" if seeds > 1 else f"{stat.mean:.4g}"

    def add(label: str, stats: list[Stat], lower_better: bool) -> None:
        row = [escape(label), *(cell(s) for s in stats)]
        if len(stats) == 2:
            delta = stats[1].mean - stats[0].mean
            better = (delta < 0) if lower_better else (delta > 0)
            colour = "green" if better else ("red" if delta else "white")
            row.append(f"[{colour}]{delta:+.4g}[/]")
        table.add_row(*row)

    for name, info in evaluation.metrics.items():
        arrow = "↓" if info.lower_better else "↑"
        add(
            f"{LABELS.get(name, name)} {arrow}",
            [m.metrics[name] for m in evaluation.models],
            info.lower_better,
        )
    add("seed diversity (pixel std) ↑", [m.diversity for m in evaluation.models], False)
    if evaluation.reward is not None:
        for column in ("best", "mean", "worst"):
            label = f"{evaluation.reward} {column.capitalize()}@{evaluation.num_samples} ↑"
            add(label, [m.reward[column] for m in evaluation.models], False)
    console.print(table)
    pooled = evaluation.reward and len(evaluation.models) > 1
    console.print(
        f"{evaluation.num_samples} samples per input, {seeds} seed set(s)"
        + (" (mean ± std over seed sets)" if seeds > 1 else "")
        + (
            f"; {evaluation.reward} rewards normalised over all models' samples of each input"
            if pooled
            else ""
        ),
        markup=False,
    )
    for name, reason in evaluation.unavailable.items():
        console.print(f"[yellow]unavailable[/] {escape(name)}: {escape(reason)}", soft_wrap=True)
