"""``dp2o eval``: the paper's evaluation (PAPER.md §8) of one backbone, or two side by side."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from dp2o_cli.options import BackboneSpec, ConfigFile, DataSpec, DegradationSpec, RewardSpec
from dp2o_cli.output import console
from dp2o_cli.progress import stage_progress
from dp2o_cli.run_config import load_run_config
from dp2o_cli.state import CliState
from rich.table import Table

from dp2o_core.errors import UsageError
from dp2o_core.evaluation import Evaluation, evaluate, load_inputs
from dp2o_core.specs import parse_spec, resolve_spec

#: PAPER.md §8: trained FR, trained NR, untrained NR, fidelity (VQ-R1 is not in pyiqa).
PAPER_METRICS = (
    "lpips", "topiq_fr", "afine_fr", "maniqa", "musiq", "clipiqa+", "topiq_nr", "afine_nr", "qalign",
    "nima", "topiq_iaa", "psnry", "ssim",
)  # fmt: skip
#: Y-channel PSNR and SSIM (the Real-ISR protocol): pyiqa's ``psnry`` and ``ssim``.
FIDELITY_METRICS = ("psnry", "ssim")
LABELS = {"psnry": "PSNR-Y", "ssim": "SSIM-Y"}


def eval_command(
    ctx: typer.Context,
    backbone: BackboneSpec = None,
    data: DataSpec = None,
    degradation: DegradationSpec = None,
    reward: RewardSpec = None,
    config_file: ConfigFile = None,
    metrics: Annotated[
        str,
        typer.Option(
            "--metrics",
            metavar="NAMES",
            help="Comma-separated pyiqa metrics; 'paper' is PAPER.md §8's set (those that cannot run "
            "are listed), 'fidelity' is PSNR/SSIM on Y.",
        ),
    ] = "paper",
    num_samples: Annotated[
        int, typer.Option("--num-samples", "-m", min=1, help="Samples per input (M).")
    ] = 8,
    seeds: Annotated[int, typer.Option("--seeds", "-k", min=1, help="Seed sets (K) for mean ± std.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Base seed of the candidates.")] = 0,
    compare: Annotated[
        str | None,
        typer.Option(
            "--compare",
            metavar="SPEC",
            help="A second backbone evaluated on the same seeds ('bicubic': plain upsampling).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Sample M outputs per input with each backbone and report metrics and Best/Mean/Worst@M."""
    manager = ctx.ensure_object(CliState).manager
    config = load_run_config(
        config_file, backbone=backbone, data=data, degradation=degradation, reward=reward
    )
    if config.data.name is None:
        raise UsageError(
            "no data given: pass --data SPEC (e.g. --data photos:split=held-out or --data paired:path=RealSR)"
        )
    resolved = config.resolve(manager, ("backbone", "data", "degradation"))
    reward_spec = config.reward if config.reward.name else parse_spec("hybrid-offline", "reward")
    reward_model = resolve_spec(manager, "reward", reward_spec, None).build()
    names = _metric_names(metrics)
    scorers, unavailable = build_scorers(manager, names, exclude=[i.name for i in reward_model.metrics()])
    from dp2o_plugins.rewards.weights import offline_unless_reachable

    try:
        with offline_unless_reachable():
            reward_model.prepare()
    except Exception as error:  # noqa: BLE001 - a reward that cannot run is reported, not fatal
        unavailable[f"reward {reward_model.name}"] = _reason(error)
        reward_model = None
    dataset = resolved["data"].build()
    degradation_model = resolved["degradation"].build() if dataset.synthesises_lr else None
    inputs = load_inputs(dataset, degradation_model, seed)
    models = [("model", str(config.backbone) or "tiny-sr", resolved["backbone"].build())]
    if compare is not None:
        models = [
            ("base", models[0][1], models[0][2]),
            ("compared", compare, _build_backbone(manager, compare)),
        ]
    with stage_progress("eval", not as_json, unit="inputs") as (start, advance):
        start(len(inputs) * len(models) * seeds)
        evaluation = evaluate(
            models, inputs, scorers, reward_model, num_samples=num_samples, seeds=seeds, seed=seed,
            on_progress=advance,
        )  # fmt: skip
    evaluation.unavailable = {**unavailable, **evaluation.unavailable}
    if as_json:
        typer.echo(json.dumps(evaluation.to_record(), indent=2))
    else:
        print_evaluation(evaluation, title=f"dp2o eval — {len(inputs)} inputs")


def _build_backbone(manager, spec: str):
    """A backbone from its spec; ``bicubic`` is the plain-upsampling baseline."""
    from dp2o_core.evaluation import BicubicBaseline

    parsed = parse_spec(spec, "backbone")
    if parsed.name == "bicubic" and not parsed.options:
        return BicubicBaseline()
    return resolve_spec(manager, "backbone", parsed, None).build()


def _metric_names(text: str) -> list[str]:
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        expanded = {"paper": PAPER_METRICS, "fidelity": FIDELITY_METRICS}.get(part, (part,) if part else ())
        names += [n for n in expanded if n not in names]
    return names


def build_scorers(manager, names, exclude=()):
    """A prepared pyiqa reward per metric name (not in ``exclude``), and name → reason for the
    metrics that cannot run (missing weights, missing package)."""
    from dp2o_plugins.rewards.weights import offline_unless_reachable

    scorers, unavailable = [], {}
    with offline_unless_reachable():
        for name in names:
            if name in exclude:
                continue
            spec = parse_spec(f"pyiqa:metric={name}", "reward")
            scorer = resolve_spec(manager, "reward", spec, None).build()
            try:
                scorer.prepare()
            except Exception as error:  # noqa: BLE001 - any metric that cannot be created is listed
                unavailable[name] = _reason(error)
                continue
            scorers.append(scorer)
    return scorers, unavailable


def _reason(error: BaseException) -> str:
    if isinstance(error, ModuleNotFoundError):
        return f"needs the Python package {error.name!r}: pip install {error.name}"
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def print_evaluation(evaluation: Evaluation, title: str) -> None:
    """A table: one row per metric and reward column, one column per model (+ difference)."""
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for model in evaluation.models:
        table.add_column(f"{model.label}\n{model.spec}", overflow="fold")
    if len(evaluation.models) == 2:
        table.add_column("difference")
    seeds = evaluation.seeds

    def cell(stat) -> str:
        return f"{stat.mean:.4g} ± {stat.std:.2g}" if seeds > 1 else f"{stat.mean:.4g}"

    def add(label: str, stats: list, lower_better: bool) -> None:
        row = [label, *(cell(s) for s in stats)]
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
    console.print(
        f"{evaluation.num_samples} samples per input, {seeds} seed set(s)"
        + (" (mean ± std over seed sets)" if seeds > 1 else "")
        + (f"; {evaluation.reward} rewards normalised over all models' samples of each input"
           if evaluation.reward and len(evaluation.models) > 1 else "")
    )  # fmt: skip
    for name, reason in evaluation.unavailable.items():
        console.print(f"[yellow]unavailable[/] {name}: {reason}", soft_wrap=True)
