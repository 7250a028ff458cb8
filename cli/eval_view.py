"""An evaluation as a table on the terminal (``dp2o eval``, ``dp2o train``'s held-out stage)."""

from __future__ import annotations

from pathlib import Path

from dp2o_cli.output import console
from rich.markup import escape
from rich.table import Table

from dp2o_core.eval_stats import PairedComparison, format_p
from dp2o_core.evaluation import Evaluation, Stat


def print_evaluation(evaluation: Evaluation, title: str) -> None:
    """A table: one row per quantity (metric, seed diversity, reward column, reward part),
    one column per model, then each later model's difference to the first with its standard
    error over inputs; with two models also the paired tests and the inputs better / worse."""
    table = Table(title=escape(title), title_justify="left")
    table.add_column("metric")
    for model in evaluation.models:
        table.add_column(f"{escape(model.label)}\n{escape(model.spec)}", overflow="fold")
    later = evaluation.models[1:]
    for model in later:
        table.add_column("Δ ± SE" if len(later) == 1 else f"Δ {escape(model.label)} ± SE", justify="right")
    paired = len(later) == 1 and bool(evaluation.comparisons)
    if paired:
        table.add_column("p (t)", justify="right")
        table.add_column("p (Wilcoxon)", justify="right")
        table.add_column("better / worse", justify="right")
    seeds = evaluation.seeds

    def cell(stat: Stat) -> str:
        return f"{stat.mean:.4g} ± {stat.std:.2g}" if seeds > 1 else f"{stat.mean:.4g}"

    for key, label in evaluation.quantities():
        row = [escape(label), *(cell(evaluation.stat(m, key)) for m in evaluation.models)]
        lower_better = evaluation.lower_better(key)
        found: list[PairedComparison] = []
        for model in later:
            comparison = evaluation.comparisons.get(model.label, {}).get(key)
            if comparison is None:  # a stored evaluation from before per-input statistics
                delta = evaluation.stat(model, key).mean - evaluation.stat(evaluation.models[0], key).mean
                row.append(_coloured(delta, f"{delta:+.4g}", lower_better))
                continue
            found.append(comparison)
            text = f"{comparison.mean_difference:+.3g}" + (
                f" ± {comparison.standard_error:.2g}" if comparison.n > 1 else ""
            )
            row.append(_coloured(comparison.mean_difference, text, lower_better))
        if paired:
            if found:
                c = found[0]
                row += [format_p(c.t_p_value), format_p(c.wilcoxon_p_value), f"{c.better} / {c.worse}"]
            else:
                row += ["-", "-", "-"]
        table.add_row(*row)
    console.print(table)
    pooled = evaluation.reward and len(evaluation.models) > 1
    console.print(
        f"{evaluation.num_samples} samples per input, {seeds} seed set(s)"
        + (" (mean ± std over seed sets)" if seeds > 1 else "")
        + (
            f"; Δ: mean difference over the {len(evaluation.inputs)} inputs ± its standard error, "
            "two-sided paired tests across inputs"
            if later
            else ""
        )
        + (
            f"; {evaluation.reward} rewards normalised over all models' samples of each input"
            if pooled
            else ""
        ),
        markup=False,
        soft_wrap=True,
    )
    for name, reason in evaluation.unavailable.items():
        console.print(f"[yellow]unavailable[/] {escape(name)}: {escape(reason)}", soft_wrap=True)


def print_rounds(run: Path) -> None:
    """The held-out reward after each round of an iterative run, each against the base model
    (the rows of the report's Rounds table)."""
    from dp2o_core.report.facts import round_rows
    from dp2o_core.store import RunStore

    rows = round_rows(RunStore(run))
    if not rows:
        return
    table = Table(
        title=f"held-out reward per round, @{rows[-1]['num_samples']}: each round's model against the base "
        "(Δ ± SE over inputs; p: Wilcoxon; inputs better / worse; the FR and NR halves' Δ Mean)",
        title_justify="left",
    )
    for column in ("round", "Best", "Mean", "Worst", "Δ Mean ± SE", "p", "+ / −", "Δ FR", "Δ NR"):
        table.add_column(column, justify="right")
    for row in rows:
        cells = [str(row["round"]), *(f"{row[c]:.4g}" for c in ("best", "mean", "worst"))]
        mean = row["mean_delta"]
        if mean is None:
            cells += ["-", "-", "-"]
        else:
            spread = f" ± {mean['standard_error']:.2g}" if mean["n"] > 1 else " (one input: no SE)"
            text = f"{mean['mean_difference']:+.3g}{spread}"
            cells += [
                _coloured(mean["mean_difference"], text, False),
                format_p(mean["wilcoxon_p_value"]),
                f"{mean['better']} / {mean['worse']}",
            ]
        for part in ("FR", "NR"):
            found = row[f"{part}_delta"]
            cells.append(f"{found['mean_difference']:+.3g}" if found else "-")
        table.add_row(*cells)
    console.print(table)


def _coloured(delta: float, text: str, lower_better: bool) -> str:
    """``text`` in green when ``delta`` is an improvement, red when it is a loss."""
    better = (delta < 0) if lower_better else (delta > 0)
    colour = "green" if better else ("red" if delta else "white")
    return f"[{colour}]{escape(text)}[/]"
