"""The HTML of the run report: plain HTML and CSS, images referenced beside it.

Every number shown carries ``data-key`` and ``data-value`` attributes (the exact value) so
tests and scripts can read the page back and compare with the run's tables.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from dp2o_core.atomic import write_text_atomic
from dp2o_core.report import plots
from dp2o_core.report.facts import Distribution, RunFacts, gather
from dp2o_core.store import RunStore

REPORT_FILE = "report.html"
ASSETS = "report"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; }
td, th { border: 1px solid #ddd; padding: 0.3em 0.7em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.better { color: #1a7f37; } .worse { color: #c62828; }
.grid img { width: 192px; height: 192px; image-rendering: pixelated; }
.grid td { text-align: center; vertical-align: top; font-size: 0.85em; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.note { color: #666; font-size: 0.9em; }
"""


def write_report(store: RunStore) -> Path:
    """Draw the plots and write ``RUN/report.html``; returns its path."""
    facts = gather(store)
    assets = store.root / ASSETS
    charts = {
        "reward_distribution": plots.reward_distribution(facts, assets / "reward_distribution.png"),
        "pair_weights": plots.pair_weights(facts, assets / "pair_weights.png"),
        "training_curves": plots.training_curves(facts, assets / "training_curves.png"),
        "pretrain_curves": plots.pretrain_curves(facts, assets / "pretrain_curves.png"),
        "held_out": plots.held_out_rewards(facts, assets / "held_out_rewards.png"),
        "rounds": plots.rounds_rewards(facts, assets / "rounds_rewards.png"),
    }
    page = render(facts, {k: v.relative_to(store.root).as_posix() for k, v in charts.items() if v})
    path = store.root / REPORT_FILE
    write_text_atomic(path, page)
    return path


def render(facts: RunFacts, charts: dict[str, str]) -> str:
    """The page, given the facts and the relative paths of the charts drawn."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>dp2o run {_e(facts.root.name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>dp2o run <code>{_e(str(facts.root))}</code></h1>",
        f'<p class="note">Written {time.strftime("%Y-%m-%d %H:%M:%S")} by dp2o '
        f"{_e(str(facts.config.get('dp2o_version', '')))}.</p>",
    ]
    parts += _pretrain_section(facts, charts)
    parts += _rounds_section(facts, charts)
    parts += _evaluation_section(facts, charts)
    parts += _training_section(facts, charts)
    parts += _pairs_section(facts, charts)
    parts += _stages_section(facts)
    parts += [
        "<h2>Configuration</h2>",
        '<p class="note">Every option\'s final value, as recorded in <code>config.json</code>.</p>',
        f"<pre>{_e(json.dumps(facts.config, indent=2, sort_keys=True))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _rounds_section(facts: RunFacts, charts: dict[str, str]) -> list[str]:
    from dp2o_core.eval_stats import format_p

    if not facts.rounds:
        return []
    m = facts.rounds[-1]["num_samples"]
    parts = [
        "<h2>Rounds</h2>",
        '<p class="note">Each round samples with the previous round\'s model and trains on from it; '
        "its held-out evaluation compares its model with the base model on the same inputs and seeds. "
        "Δ is the mean difference over inputs ± its standard error, p the Wilcoxon signed-rank test. "
        "The rounds' own stages are in <code>rounds/&lt;r&gt;/</code>; the sections below are "
        "round 1's.</p>",
        f"<table><tr><th>round</th><th>Best@{m}</th><th>Mean@{m}</th><th>Worst@{m}</th>"
        f"<th>Δ Mean@{m} ± SE</th><th>p</th><th>better / worse</th><th>Δ FR half</th><th>Δ NR half</th></tr>",
    ]
    for row in facts.rounds:
        number = row["round"]
        cells = [f"<td>{number}</td>"]
        cells += [_number(f"rounds.{number}.{key}", row[key]) for key in ("best", "mean", "worst")]
        delta = row["mean_delta"]
        if delta:
            change = delta["mean_difference"]
            cls = "better" if change > 0 else ("worse" if change else "")
            key = f"rounds.{number}.mean_delta"
            se = delta["standard_error"] if delta["n"] > 1 else None  # undefined from one input
            cells.append(_number(key, change, cls=cls, signed=True, std=se))
            cells.append(f"<td>{_e(format_p(delta['wilcoxon_p_value']))}</td>")
            cells.append(f"<td>{delta['better']} / {delta['worse']}</td>")
        else:
            cells += ["<td>—</td>"] * 3
        for part in ("FR", "NR"):
            found = row.get(f"{part}_delta")
            cells.append(
                _number(f"rounds.{number}.{part}_delta", found["mean_difference"], signed=True)
                if found
                else "<td>—</td>"
            )
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    if "rounds" in charts:
        parts.append(_image(charts["rounds"], "Held-out reward after each round"))
    return parts


def _evaluation_section(facts: RunFacts, charts: dict[str, str]) -> list[str]:
    from dp2o_core.eval_stats import format_p
    from dp2o_core.evaluation import Evaluation

    evaluation = facts.evaluation
    if not evaluation:
        return []
    stored = Evaluation.from_record(evaluation)
    models = evaluation["models"]
    paired = len(models) == 2 and bool(stored.comparisons)
    parts = [
        "<h2>Held-out evaluation</h2>",
        f'<p class="note">{len(evaluation["inputs"])} held-out inputs, {evaluation["num_samples"]} samples '
        f"each per model, {evaluation['seeds']} seed set(s); every model samples the same seeds."
        + (
            " Δ is the mean difference over the inputs ± its standard error; the p-values are two-sided "
            "paired tests across inputs; better / worse counts inputs.</p>"
            if paired
            else "</p>"
        ),
        "<table><tr><th>metric</th>"
        + "".join(f"<th>{_e(m['label'])}<br><code>{_e(m['spec'])}</code></th>" for m in models)
        + ("<th>Δ ± SE</th><th>p (t)</th><th>p (Wilcoxon)</th><th>better / worse</th>" if paired else "")
        + ("<th>difference</th>" if len(models) == 2 and not paired else "")
        + "</tr>",
    ]
    for key, label in stored.quantities():
        stats = [stored.stat(m, key) for m in stored.models]
        cells = [f"<td>{_e(label)}</td>"]
        for model, stat in zip(models, stats, strict=True):
            cells.append(_number(f"eval.{model['label']}.{key}", stat.mean, std=stat.std))
        if len(stats) == 2:
            comparison = stored.comparisons.get(stored.models[1].label, {}).get(key)
            delta = comparison.mean_difference if comparison else stats[1].mean - stats[0].mean
            better = delta < 0 if stored.lower_better(key) else delta > 0
            cls = "better" if better else ("worse" if delta else "")
            se = comparison.standard_error if comparison and comparison.n > 1 else None
            cells.append(_number(f"eval.difference.{key}", delta, cls=cls, signed=True, std=se))
            if paired:
                found = [
                    ("t_p", comparison.t_p_value, format_p(comparison.t_p_value)),
                    ("wilcoxon_p", comparison.wilcoxon_p_value, format_p(comparison.wilcoxon_p_value)),
                    ("better_worse", [comparison.better, comparison.worse],
                     f"{comparison.better} / {comparison.worse}"),
                ] if comparison else []  # fmt: skip
                cells += [
                    f'<td data-key="eval.{name}.{_e(key)}" data-value="{_e(repr(value))}">{_e(text)}</td>'
                    for name, value, text in found
                ] or ["<td>—</td>"] * 3
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    if evaluation.get("unavailable"):
        parts.append("<p class='note'>Unavailable: " + "; ".join(
            f"{_e(k)} ({_e(v)})" for k, v in evaluation["unavailable"].items()
        ) + "</p>")  # fmt: skip
    if "held_out" in charts:
        parts.append(_image(charts["held_out"], "Held-out reward, Best/Mean/Worst@M"))
    parts += _image_grid(facts, [m["label"] for m in models])
    return parts


def _image_grid(facts: RunFacts, labels: list[str]) -> list[str]:
    folder = facts.root / "eval" / "images"
    if not folder.is_dir():
        return []
    columns = ["lr", *labels, "hr"]
    parts = [
        "<h3>Held-out images</h3>",
        '<p class="note">LR (shown enlarged), the first sample of each model (same seed), and HR.</p>',
        '<table class="grid"><tr><th>input</th>' + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr>",
    ]
    for input_id in (facts.evaluation or {}).get("inputs", []):
        cells = [f"<td>{_e(input_id)}</td>"]
        for column in columns:
            relative = f"eval/images/{input_id}/{column}.png"
            if (facts.root / relative).exists():
                cells.append(f'<td><img src="{_e(relative)}" alt="{_e(column)} {_e(input_id)}"></td>')
            else:
                cells.append("<td>—</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    return parts


def _training_section(facts: RunFacts, charts: dict[str, str]) -> list[str]:
    if facts.train is None and not facts.history:
        return []
    parts = ["<h2>Training</h2>", "<table>"]
    train = facts.train or {}
    parts.append(_row("optimizer steps", "train.steps", train.get("steps", len(facts.history))))
    parts.append(_row("pairs in the run", "train.pairs", train.get("pairs")))
    final = train.get("final") or (facts.history[-1] if facts.history else {})
    for key, label in (
        ("loss", "final loss"),
        ("implicit_accuracy", "final implicit accuracy"),
        ("winner_margin", "final winner error − reference"),
        ("loser_margin", "final loser error − reference"),
    ):
        if key in final:
            parts.append(_row(label, f"train.final.{key}", final[key]))
    parts.append("</table>")
    if "training_curves" in charts:
        parts.append(_image(charts["training_curves"], "Training curves"))
    return parts


def _pretrain_section(facts: RunFacts, charts: dict[str, str]) -> list[str]:
    """``dp2o pretrain``: steps, final loss, the first and last validation, curves, grids."""
    if facts.pretrain is None and not facts.pretrain_history:
        return []
    done = facts.pretrain or {}
    parts = ["<h2>Pretraining</h2>", "<table>"]
    parts.append(_row("optimizer steps", "pretrain.steps", done.get("steps", len(facts.pretrain_history))))
    final = done.get("final") or (facts.pretrain_history[-1] if facts.pretrain_history else {})
    if "loss" in final:
        parts.append(_row("final denoising loss", "pretrain.final.loss", final["loss"]))
    parts.append("</table>")
    if facts.validation:
        first, last = facts.validation[0], facts.validation[-1]
        parts.append(
            f"<table><tr><th>validation</th><th>model, step {first['step']}</th>"
            f"<th>model, step {last['step']}</th><th>bicubic</th></tr>"
        )
        for name in last.get("model", {}):
            parts.append(
                f"<tr><td>{_e(name)}</td>"
                + _number(f"pretrain.validation.first.{name}", first.get("model", {}).get(name))
                + _number(f"pretrain.validation.last.{name}", last["model"][name])
                + _number(f"pretrain.validation.bicubic.{name}", last.get("bicubic", {}).get(name))
                + "</tr>"
            )
        parts.append("</table>")
    if "pretrain_curves" in charts:
        parts.append(_image(charts["pretrain_curves"], "Pretraining curves"))
    if facts.validation_grids:
        shown = [facts.validation_grids[0], facts.validation_grids[-1]]
        parts.append(
            '<p class="note">Validation samples, first and last (bicubic | model | HR per input):</p>'
        )
        parts += [_image(grid, f"validation {Path(grid).stem}") for grid in dict.fromkeys(shown)]
    return parts


def _pairs_section(facts: RunFacts, charts: dict[str, str]) -> list[str]:
    pairs = facts.pairs
    if pairs is None or not pairs.pairs:
        return []
    parts = ["<h2>Rewards, pairs and weights</h2>", "<table><tr><th></th><th>count</th><th>mean</th>"
             "<th>std</th><th>min</th><th>max</th></tr>"]  # fmt: skip
    for label, key, distribution in (
        ("candidate reward", "rewards", pairs.rewards),
        ("reward gap of a pair", "gaps", pairs.gaps),
        ("pair weight", "weights", pairs.weights),
    ):
        parts.append(_distribution_row(label, key, distribution))
    parts.append("</table>")
    parts.append(
        f"<p>{_number('pairs.count', pairs.pairs, tag='span')} pairs from "
        f"{_number('pairs.groups', pairs.groups, tag='span')} groups"
        + (" (the charts show evenly spaced samples).</p>" if pairs.sampled else ".</p>")
    )
    for key, alt in (("reward_distribution", "Reward distribution"), ("pair_weights", "Pair weights")):
        if key in charts:
            parts.append(_image(charts[key], alt))
    return parts


def _stages_section(facts: RunFacts) -> list[str]:
    parts = [
        "<h2>Stages</h2>",
        "<table><tr><th>stage</th><th>state</th><th>seconds</th><th>work done</th><th>per second</th></tr>",
    ]
    for stage in facts.stages:
        name = stage["stage"]
        work = f"{stage['units']} {stage['unit']}" if stage["units"] is not None else "—"
        seconds = stage["seconds"]
        throughput = stage["throughput"]
        parts.append(
            f"<tr><td>{_e(name)}</td><td>{_e(stage['state'])}</td>"
            + (_number(f"stages.{name}.seconds", seconds) if seconds is not None else "<td>—</td>")
            + f"<td>{_e(work)}</td>"
            + (_number(f"stages.{name}.throughput", throughput) if throughput else "<td>—</td>")
            + "</tr>"
        )
    parts.append("</table>")
    parts.append('<p class="note">Time of the latest run that did the stage\'s work.</p>')
    return parts


# -- helpers -----------------------------------------------------------------------------------
def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _format(value: Any, signed: bool = False) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:+d}" if signed else str(value)
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _number(key: str, value: Any, *, std: float | None = None, cls: str = "", signed: bool = False,
            tag: str = "td") -> str:  # fmt: skip
    shown = _format(value, signed)
    if std:
        shown += f" ± {std:.2g}"
    attributes = f' data-key="{_e(key)}" data-value="{_e(repr(value))}"'
    if cls:
        attributes += f' class="{cls}"'
    return f"<{tag}{attributes}>{_e(shown)}</{tag}>"


def _row(label: str, key: str, value: Any) -> str:
    return f"<tr><td>{_e(label)}</td>{_number(key, value)}</tr>"


def _distribution_row(label: str, key: str, distribution: Distribution | None) -> str:
    if distribution is None:
        return f"<tr><td>{_e(label)}</td><td colspan='5'>—</td></tr>"
    cells = "".join(
        _number(f"{key}.{field}", getattr(distribution, field))
        for field in ("count", "mean", "std", "min", "max")
    )
    return f"<tr><td>{_e(label)}</td>{cells}</tr>"


def _image(relative: str, alt: str) -> str:
    return f'<p><img src="{_e(relative)}" alt="{_e(alt)}" style="max-width:100%"></p>'
