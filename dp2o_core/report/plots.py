"""The report's charts, drawn with matplotlib (Agg backend) into PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dp2o_core.atomic import atomic_path
from dp2o_core.report.facts import RunFacts

COLOURS = {"base": "#7f8c8d", "tuned": "#1f77b4", "winner": "#2ca02c", "loser": "#d62728"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    plt = _pyplot()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    return path


def reward_distribution(facts: RunFacts, path: Path) -> Path | None:
    """Histogram of every candidate's reward, with the winners' and losers' rewards over it."""
    pairs = facts.pairs
    if pairs is None or not pairs.reward_sample:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 3.4))
    bins = 30
    axis.hist(pairs.reward_sample, bins=bins, color="#bbbbbb", label="all candidates")
    axis.hist(sorted(pairs.winner_sample), bins=bins, alpha=0.7, color=COLOURS["winner"], label="winners")
    axis.hist(sorted(pairs.loser_sample), bins=bins, alpha=0.7, color=COLOURS["loser"], label="losers")
    axis.set_xlabel("reward")
    axis.set_ylabel("candidates")
    axis.legend()
    axis.set_title("Reward of the candidates" + (" (evenly spaced sample)" if pairs.sampled else ""))
    return _save(figure, path)


def pair_weights(facts: RunFacts, path: Path) -> Path | None:
    """Pair weights: their histogram, and weight against reward gap."""
    pairs = facts.pairs
    if pairs is None or not pairs.weight_sample:
        return None
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    weights, gaps = pairs.weight_sample, pairs.gap_sample
    left.hist(weights, bins=30, color=COLOURS["tuned"])
    left.set_xlabel("pair weight")
    left.set_ylabel("pairs")
    left.set_title("Pair weights" + (" (evenly spaced sample)" if pairs.sampled else ""))
    right.scatter(gaps, weights, s=8, alpha=0.6, color=COLOURS["tuned"])
    right.set_xlabel("reward gap (winner − loser)")
    right.set_ylabel("pair weight")
    right.set_title("Weight against reward gap")
    return _save(figure, path)


def training_curves(facts: RunFacts, path: Path) -> Path | None:
    """Loss, implicit accuracy, error margins against the reference, learning rate."""
    if not facts.history:
        return None
    plt = _pyplot()
    steps = [h["step"] for h in facts.history]
    figure, axes = plt.subplots(2, 2, figsize=(9, 5.6))
    panels: list[tuple[Any, str, list[tuple[str, str | None]]]] = [
        (axes[0][0], "DPO loss", [("loss", None)]),
        (axes[0][1], "Implicit accuracy", [("implicit_accuracy", None)]),
        (
            axes[1][0],
            "Error − reference error",
            [("winner_margin", COLOURS["winner"]), ("loser_margin", COLOURS["loser"])],
        ),
        (axes[1][1], "Learning rate", [("learning_rate", None)]),
    ]
    for axis, title, series in panels:
        for key, colour in series:
            axis.plot(steps, [h[key] for h in facts.history], label=key.replace("_", " "), color=colour)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if len(series) > 1:
            axis.axhline(0, color="black", linewidth=0.6)
            axis.legend()
    return _save(figure, path)


def pretrain_curves(facts: RunFacts, path: Path) -> Path | None:
    """Pretraining: the denoising loss, the learning rate, and each validation metric of the
    model against bicubic upsampling, by step."""
    if not facts.pretrain_history:
        return None
    plt = _pyplot()
    metrics = list(facts.validation[0].get("model", {})) if facts.validation else []
    figure, axes = plt.subplots(1, 2 + len(metrics), figsize=(4.2 * (2 + len(metrics)), 3.4), squeeze=False)
    steps = [h["step"] for h in facts.pretrain_history]
    loss, rate = axes[0][0], axes[0][1]
    loss.plot(steps, [h["loss"] for h in facts.pretrain_history], linewidth=0.8)
    loss.set_yscale("log")
    loss.set_title("Denoising loss")
    rate.plot(steps, [h["learning_rate"] for h in facts.pretrain_history])
    rate.set_title("Learning rate")
    for axis, name in zip(axes[0][2:], metrics, strict=True):
        at = [v["step"] for v in facts.validation]
        axis.plot(at, [v["model"][name] for v in facts.validation], marker="o", label="model",
                  color=COLOURS["tuned"])  # fmt: skip
        axis.plot(at, [v["bicubic"][name] for v in facts.validation], linestyle="--", label="bicubic",
                  color=COLOURS["base"])  # fmt: skip
        axis.set_title(f"Validation {name}")
        axis.legend()
    for axis in axes[0]:
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    return _save(figure, path)


def held_out_rewards(facts: RunFacts, path: Path) -> Path | None:
    """Best/Mean/Worst@M of the held-out reward per model, as grouped bars."""
    evaluation = facts.evaluation
    if not evaluation or not evaluation.get("reward"):
        return None
    plt = _pyplot()
    columns = ["best", "mean", "worst"]
    models = evaluation["models"]
    figure, axis = plt.subplots(figsize=(6.4, 3.4))
    width = 0.8 / len(models)
    for index, model in enumerate(models):
        positions = [c + (index - (len(models) - 1) / 2) * width for c in range(len(columns))]
        values = [model["reward"][c]["mean"] for c in columns]
        errors = [model["reward"][c]["std"] for c in columns]
        bars = axis.bar(
            positions, values, width, yerr=errors, label=model["label"], color=COLOURS.get(model["label"])
        )
        axis.bar_label(bars, fmt="%.3f", fontsize=8)
    m = evaluation["num_samples"]
    axis.set_xticks(range(len(columns)), [f"{c.capitalize()}@{m}" for c in columns])
    axis.set_ylabel(f"{evaluation['reward']} reward")
    axis.set_title("Held-out reward (normalised over both models' samples)")
    axis.legend()
    return _save(figure, path)


def rounds_rewards(facts: RunFacts, path: Path) -> Path | None:
    """Held-out reward difference to the base model after each round (Mean@M ± standard
    error over inputs, and Best/Worst@M), as lines over the rounds."""
    rows = [row for row in facts.rounds if row.get("mean_delta")]
    if len(rows) < 2:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 3.4))
    rounds = [row["round"] for row in rows]
    m = rows[-1]["num_samples"]
    for key, style in (("best", ":"), ("mean", "-"), ("worst", "--")):
        deltas = [row[f"{key}_delta"] for row in rows]
        values = [d["mean_difference"] if d else float("nan") for d in deltas]
        errors = [d["standard_error"] if d and key == "mean" else 0.0 for d in deltas]
        axis.errorbar(rounds, values, yerr=errors, linestyle=style, marker="o", capsize=3,
                      label=f"Δ {key.capitalize()}@{m}")  # fmt: skip
    axis.axhline(0.0, color="#999999", linewidth=0.8)
    axis.set_xticks(rounds)
    axis.set_xlabel("round")
    axis.set_ylabel("held-out reward − base")
    axis.set_title("Held-out reward after each round, against the base model")
    axis.legend(fontsize=8)
    return _save(figure, path)
