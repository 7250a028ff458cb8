"""``dp2o eval``: the paper's evaluation (docs/evaluation.md) of one backbone, or two side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from dp2o_cli.eval_view import print_evaluation
from dp2o_cli.options import BackboneSpec, ConfigFile, DataSpec, DegradationSpec, PrompterSpec, RewardSpec
from dp2o_cli.output import console
from dp2o_cli.progress import stage_progress
from dp2o_cli.run_config import load_run_config
from dp2o_cli.state import CliState

from dp2o_core.errors import UsageError
from dp2o_core.evaluation import (
    EvalModel,
    build_scorers,
    check_per_input_path,
    compared_backbone,
    compared_model,
    ensure_sizes_fit,
    evaluate,
    load_inputs,
    prepared_reward,
    progress_unit,
    write_per_input,
)
from dp2o_core.preflight import component_checks, dataset_check, ensure
from dp2o_core.specs import parse_spec, resolve_spec

Metrics = Annotated[
    str,
    typer.Option(
        "--metrics",
        metavar="NAMES",
        help="Comma-separated metrics: pyiqa names or vqr1, each with options as in a spec "
        "(vqr1:model=DIR,thinking=false); 'paper' is the paper's fourteen (those that cannot run are "
        "listed), 'fidelity' is PSNR/SSIM on Y; -NAME leaves one out (paper,-vqr1).",
    ),
]
NumSamples = Annotated[int, typer.Option("--num-samples", "-m", min=1, help="Samples per input (M).")]
Seeds = Annotated[int, typer.Option("--seeds", "-k", min=1, help="Seed sets (K) for mean ± std.")]
EvalSeed = Annotated[int, typer.Option("--seed", help="Base seed of the candidates.")]
Compare = Annotated[
    str | None,
    typer.Option(
        "--compare",
        metavar="SPEC",
        help="A second backbone evaluated on the same seeds ('bicubic': plain upsampling).",
    ),
]
PerInput = Annotated[
    Path | None,
    typer.Option(
        "--per-input",
        metavar="FILE",
        help="Also write the per-input table (one row per input and model) to FILE: .csv or .json.",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def eval_command(
    ctx: typer.Context,
    backbone: BackboneSpec = None,
    data: DataSpec = None,
    degradation: DegradationSpec = None,
    prompter: PrompterSpec = None,
    reward: RewardSpec = None,
    config_file: ConfigFile = None,
    metrics: Metrics = "paper",
    num_samples: NumSamples = 8,
    seeds: Seeds = 1,
    seed: EvalSeed = 0,
    compare: Compare = None,
    per_input: PerInput = None,
    as_json: AsJson = False,
) -> None:
    """Sample M outputs per input with each backbone and report metrics and Best/Mean/Worst@M.

    With --compare, each difference comes with its standard error over the inputs, the paired t and
    Wilcoxon signed-rank tests and the number of inputs that got better and worse.
    """
    if per_input is not None:
        check_per_input_path(per_input)
    manager = ctx.ensure_object(CliState).manager
    config = load_run_config(
        config_file, backbone=backbone, data=data, degradation=degradation, prompter=prompter, reward=reward
    )
    if config.data.name is None:
        raise UsageError(
            "no data given: pass --data SPEC (e.g. --data photos:split=held-out or --data paired:path=RealSR)"
        )
    resolved = config.resolve(manager, ("backbone", "data", "degradation", "prompter"))
    # the backbone's and prompter's weights and the data, before any sampling (metrics that cannot
    # run are listed)
    dataset = resolved["data"].build()
    compared = compared_backbone(manager, compare) if compare is not None else None
    ensure([
        *component_checks(resolved["backbone"]), *(component_checks(compared) if compared else []),
        *component_checks(resolved["prompter"]), dataset_check("data", str(config.data), dataset.items),
    ])  # fmt: skip
    reward_spec = config.reward if config.reward.name else parse_spec("hybrid-offline", "reward")
    reward_model = resolve_spec(manager, "reward", reward_spec, None).build()
    scorers, unavailable = build_scorers(manager, metrics, exclude=[i.name for i in reward_model.metrics()])
    prepared = prepared_reward(reward_model, unavailable)
    degradation = resolved["degradation"].build() if dataset.synthesises_lr else None
    inputs = load_inputs(dataset, degradation, seed, resolved["prompter"].build())
    models = [EvalModel("model", str(config.backbone) or "tiny-sr", resolved["backbone"].build())]
    if compare is not None:
        models = [
            models[0]._replace(label="base"),
            compared_model(manager, compare, scale=models[0].backbone.scale),
        ]
    ensure_sizes_fit(inputs, models)
    with stage_progress("eval", not as_json, unit=progress_unit(len(models), seeds)) as (start, advance):
        start(len(inputs) * len(models) * seeds)
        evaluation = evaluate(
            models, inputs, scorers, prepared, num_samples=num_samples, seeds=seeds, seed=seed,
            on_progress=advance,
        )  # fmt: skip
    evaluation.unavailable = {**unavailable, **evaluation.unavailable}
    # the results are shown first: should the file fail after all, they are not lost
    if as_json:
        typer.echo(json.dumps(evaluation.to_record(), indent=2))
    else:
        print_evaluation(evaluation, title=f"dp2o eval — {len(inputs)} inputs")
    if per_input is not None:
        write_per_input(evaluation, per_input)
        if not as_json:
            console.print(f"Per-input table: {per_input}", markup=False, soft_wrap=True)
