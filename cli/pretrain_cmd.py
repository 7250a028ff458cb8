"""``dp2o pretrain``: build the SR generator that ``dp2o train`` then preference-tunes.

It trains the backbone's trainable part (the ControlNet of sd2 and flux, all of tiny-sr) with the
model's own denoising loss on random HR crops of ``--data``, whose LR ``--degradation`` makes
afresh at every step, and saves the averaged weights in ``RUN/pretrain/final`` — a model in the
backbone's own format. It ends by printing the backbone spec that loads it.
"""

from __future__ import annotations

from typing import Any

import typer
from dp2o_cli.options import (
    BackboneSpec,
    BatchSize,
    CheckpointEvery,
    ConfigFile,
    Crop,
    DataSpec,
    DegradationSpec,
    Ema,
    EvalData,
    LearningRate,
    MaxSteps,
    MicroBatchSize,
    MixedPrecision,
    NullPromptRatio,
    Redo,
    Resume,
    RunDir,
    Schedule,
    Seed,
    Tracker,
    ValidateEvery,
    WarmupSteps,
)
from dp2o_cli.output import console
from dp2o_cli.run_config import load_run_config
from dp2o_cli.runs import open_run

from dp2o_core.config import recorded_config
from dp2o_core.pipeline import Pipeline, RunOptions
from dp2o_core.store import RunStore

#: the flags that are [pretrain] settings
SETTINGS = ("max_steps", "batch_size", "micro_batch_size", "crop", "learning_rate", "warmup_steps",
            "schedule", "ema", "null_prompt_ratio", "mixed_precision", "checkpoint_every", "validate_every",
            "tracker")  # fmt: skip


def pretrain(
    ctx: typer.Context,
    run: RunDir,
    backbone: BackboneSpec = None,
    data: DataSpec = None,
    degradation: DegradationSpec = None,
    eval_data: EvalData = None,
    config_file: ConfigFile = None,
    seed: Seed = None,
    max_steps: MaxSteps = None,
    batch_size: BatchSize = None,
    micro_batch_size: MicroBatchSize = None,
    crop: Crop = None,
    learning_rate: LearningRate = None,
    warmup_steps: WarmupSteps = None,
    schedule: Schedule = None,
    ema: Ema = None,
    null_prompt_ratio: NullPromptRatio = None,
    mixed_precision: MixedPrecision = None,
    checkpoint_every: CheckpointEvery = None,
    validate_every: ValidateEvery = None,
    tracker: Tracker = None,
    resume: Resume = True,
    redo: Redo = False,
) -> None:
    """Build the SR generator to tune: train the backbone on HR crops degraded afresh every step.

    The ControlNet of sd2/flux starts as its paper's (controlnet=new: copied from the base model) or
    from a given file; tiny-sr from init=random or its weights. Interrupted, the same command resumes
    from the last checkpoint. On an existing run it starts from the configuration the run recorded.
    Settings beyond these flags go in a config file's [pretrain] table (docs/training.md).
    """
    flags = dict(locals())
    settings = {key: flags[key] for key in SETTINGS}
    base = recorded_config(RunStore(run)) if config_file is None else None
    config = load_run_config(
        config_file, base=base, run=run, backbone=backbone, data=data, degradation=degradation,
        eval_data=eval_data, seed=seed, pretrain=settings,
    )  # fmt: skip
    options = RunOptions(resume=resume, owns=("pretrain",), redo=redo)
    context = open_run(ctx, run, config, options)
    pipeline = _pipeline()
    pipeline.ensure_ready(context)  # weights, files, crop sizes and the degradation, before anything
    context.accelerator = _accelerator(context, config)
    results = pipeline.run(context, announce=True, check=False)
    if context.process.is_main:
        from dp2o_core.report import write_report

        _print_result(context, results.get("pretrain"), write_report(context.store))
    context.barrier()
    context.accelerator.state.destroy_process_group()


def _pipeline() -> Pipeline:
    from dp2o_core.stages.pretrain import PretrainStage

    return Pipeline([PretrainStage()])


def _accelerator(context: Any, config: Any) -> Any:
    """accelerate's Accelerator for pretraining (a CPU process group for a CPU backbone)."""
    from dp2o_core.training.trainer import make_accelerator

    on_cpu = getattr(context.component("backbone").options, "device", "auto") == "cpu" or None
    return make_accelerator(config.pretrain, context.store.stage_dir("pretrain"), cpu=on_cpu)


def _print_result(context: Any, outcome: Any, report: Any) -> None:
    """Where the model is, its last loss and validation, the report and the spec that loads it."""
    from dp2o_core.pipeline.tuned import spec_with
    from dp2o_core.stages.pretrain import read_validation

    store = context.store
    completion = store.completion("pretrain") or {}
    weights = (store.root / completion.get("weights", "pretrain/final")).absolute()
    final = completion.get("final") or {}
    resumed = outcome.result.resumed_from if outcome is not None else None
    loss = final.get("loss", float("nan"))
    console.print(
        f"pretrain: {completion.get('steps', '?')} steps"
        + (f", resumed from step {resumed}" if resumed else "")
        + f", final loss {loss:.5g}; the model is in {weights}",
        markup=False,
        soft_wrap=True,
    )
    validation = read_validation(store.stage_dir("pretrain"))
    if validation:
        first, last = validation[0], validation[-1]
        for name, value in last.get("model", {}).items():
            start = first.get("model", {}).get(name, float("nan"))
            bicubic = last.get("bicubic", {}).get(name, float("nan"))
            console.print(
                f"  {name}: {start:.4g} at step {first['step']} → {value:.4g} at step {last['step']} "
                f"(bicubic {bicubic:.4g})",
                markup=False,
            )
    spec = spec_with(context.component("backbone"), completion.get("tuned_options", {}))
    console.print(f"Report: {report}", soft_wrap=True, markup=False)
    console.print("Preference-tune it, or upscale with it:", markup=False)
    console.print(f"  dp2o train --backbone '{spec}' …", soft_wrap=True, markup=False)
    console.print(f"  dp2o upscale LR_IMAGES OUTPUT --backbone '{spec}'", soft_wrap=True, markup=False)
