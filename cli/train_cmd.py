"""``dp2o train``: the whole method — data, sample, score, pairs, train — in one run directory.

Each stage is skipped when its outputs are current, continued when partial and redone when
its configuration or an upstream stage changed (the run store's fingerprints). Under
``accelerate launch`` sampling and scoring are sharded over the processes, pairs are made by
process 0 and training runs with DDP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from dp2o_cli.options import (
    BackboneSpec,
    ConfigFile,
    DataSpec,
    DegradationSpec,
    RewardSpec,
    Seed,
    SelectorSpec,
    WeightingSpec,
)
from dp2o_cli.output import console
from dp2o_cli.prepare_cmd import prepare_data
from dp2o_cli.progress import stage_progress, stages_progress
from dp2o_cli.run_config import load_run_config, write_run_config
from dp2o_cli.state import CliState
from rich.table import Table

from dp2o_core.config import SETTINGS_SECTIONS, RunConfig
from dp2o_core.presets import embedded_default
from dp2o_core.specs import Resolved, Spec, parse_spec
from dp2o_core.stages.sample import run_sample_stage, sample_stage_config
from dp2o_core.stages.score import run_score_stage, score_stage_config
from dp2o_core.stages.timings import timed
from dp2o_core.stages.train import train_stage_config
from dp2o_core.store import ProcessInfo, RunStore


def train(
    ctx: typer.Context,
    run: Annotated[
        Path | None, typer.Option("--run", metavar="DIR", help="Run directory (default: runs/<backbone>).")
    ] = None,
    config_file: ConfigFile = None,
    backbone: BackboneSpec = None,
    data: DataSpec = None,
    degradation: DegradationSpec = None,
    reward: RewardSpec = None,
    selector: SelectorSpec = None,
    weighting: WeightingSpec = None,
    eval_data: Annotated[
        str | None,
        typer.Option(
            "--eval-data", metavar="SPEC", help="Held-out data evaluated after training (base vs tuned)."
        ),
    ] = None,
    seed: Seed = None,
    num_candidates: Annotated[
        int | None, typer.Option("--num-candidates", "-m", min=2, help="Candidates per LR input (M).")
    ] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Optimizer steps.")] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Pairs per optimizer step (all processes).")
    ] = None,
    micro_batch_size: Annotated[
        int | None, typer.Option("--micro-batch-size", min=1, help="Pairs per forward pass per process.")
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option("--learning-rate", "--lr", help="Learning rate.")
    ] = None,
    beta: Annotated[float | None, typer.Option("--beta", help="DPO β (paper: 5000).")] = None,
    loss: Annotated[
        Literal["sigmoid", "hinge", "ipo"] | None, typer.Option("--loss", help="DPO loss variant.")
    ] = None,
    mixed_precision: Annotated[
        Literal["no", "fp16", "bf16"] | None, typer.Option("--mixed-precision", help="Autocast precision.")
    ] = None,
    checkpoint_every: Annotated[
        int | None, typer.Option("--checkpoint-every", min=1, help="Steps between checkpoints.")
    ] = None,
    tracker: Annotated[
        Literal["tensorboard", "wandb", "none"] | None,
        typer.Option("--tracker", help="Training-curve logger."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume/--restart",
            help="Continue training from the newest checkpoint (default), or start training over.",
        ),
    ] = True,
    on_bad_image: Annotated[
        Literal["error", "skip"],
        typer.Option("--on-bad-image", help="Stop at an unusable input image, or skip and list it."),
    ] = "error",
) -> None:
    """Run sample → score → pairs → train → eval, skipping what is current and continuing what is partial.

    With no --config and no backbone but tiny-sr it runs the embedded default: the bundled tiny-sr model
    on scikit-image's photographs with the offline reward, on a CPU in minutes (docs/embedded.md).
    """
    manager = ctx.ensure_object(CliState).manager
    # tiny-sr's natural setting is the embedded one; other backbones start from the paper's defaults
    embedded = config_file is None and (
        backbone is None or parse_spec(backbone, "backbone").name in (None, "tiny-sr")
    )
    config = load_run_config(
        config_file,
        base=embedded_default() if embedded else None,
        run=run,
        backbone=backbone,
        data=data,
        degradation=degradation,
        reward=reward,
        selector=selector,
        weighting=weighting,
        eval_data=eval_data,
        seed=seed,
        sample={"num_candidates": num_candidates},
        train={
            "max_steps": max_steps,
            "batch_size": batch_size,
            "micro_batch_size": micro_batch_size,
            "learning_rate": learning_rate,
            "beta": beta,
            "loss": loss,
            "mixed_precision": mixed_precision,
            "checkpoint_every": checkpoint_every,
            "tracker": tracker,
        },
    )
    run_dir = config.run or Path("runs") / str(config.backbone.name or "tiny-sr")
    store = RunStore(run_dir)
    process = ProcessInfo.detect()
    show = process.is_main
    if embedded and show:
        console.print(
            "Running the embedded default (tiny-sr on scikit-image's photographs, offline reward; "
            f"docs/embedded.md) in {run_dir}"
        )
    # without --data a run keeps the data it has; a new run uses the default data set
    keep_data = config.data.name is None and store.status("data").state == "done"
    keys = ("backbone", "reward", "selector", "weighting") + (() if keep_data else ("data", "degradation"))
    resolved = config.resolve(manager, keys)

    from dp2o_core.training.trainer import make_accelerator

    on_cpu = getattr(resolved["backbone"].options, "device", "auto") == "cpu" or None
    accelerator = make_accelerator(config.train, store.stage_dir("train"), cpu=on_cpu)
    # every process waits at the end of a stage until process 0 has marked it done
    with timed(store, "data", "images", show) as facts:
        _data_stage(store, config, resolved, process, on_bad_image, show, keep_data)
        facts["units"] = len(store.done_groups("data"))
    accelerator.wait_for_everyone()
    model = resolved["backbone"].build()
    if show:
        write_run_config(store, config, resolved, owns=SETTINGS_SECTIONS)
    _sample_stage(store, config, resolved, model, process, show)
    accelerator.wait_for_everyone()
    _score_stage(store, resolved, process, show)
    accelerator.wait_for_everyone()
    if process.is_main:
        _pairs_stage(store, resolved, show)
    accelerator.wait_for_everyone()
    result = _train_stage(store, config, resolved, model, accelerator, resume, show)
    accelerator.wait_for_everyone()
    completion = store.completion("train") or {}
    tuned = tuned_spec(resolved["backbone"], model, store.root / completion.get("weights", "train/final"))
    del model
    evaluation = None
    if config.eval_data.name is not None and process.is_main:
        evaluation = _eval_stage(store, config, manager, resolved, tuned, show)
    if show:
        from dp2o_core.report import write_report

        report = write_report(store)
        _print_summary(store, tuned, result, evaluation, report)
    accelerator.wait_for_everyone()
    accelerator.state.destroy_process_group()


# -- the stages -------------------------------------------------------------------------------
def _announce(store: RunStore, stage: str, expected: str | None, show: bool) -> bool:
    """Print what happens to ``stage``; True when it still has work to do."""
    status = store.status(stage, expected=expected)
    if not show:
        return status.state != "done"
    if status.state == "done":
        console.print(f"[bold]{stage}[/]: current — skipped")
    elif status.state == "partial":
        done = (
            f"{status.groups_done}/{status.groups_total} groups done"
            if status.groups_total
            else "interrupted"
        )
        console.print(f"[bold]{stage}[/]: partial ({done}) — continuing")
    elif status.state == "stale":
        console.print(f"[bold]{stage}[/]: {status.reason} — redoing")
    elif status.state == "damaged":
        console.print(f"[bold]{stage}[/]: damaged ({status.reason}) — redoing the damaged groups")
    else:
        console.print(f"[bold]{stage}[/]: running")
    return status.state != "done"


def _data_stage(store, config: RunConfig, resolved, process, on_bad_image, show, keep_data: bool) -> None:
    if keep_data:
        if show:
            console.print("[bold]data[/]: current — skipped (no --data given; using the run's)")
        return
    if config.data.name is None and show:
        name = resolved["data"].registration.name
        console.print(f"[bold]data[/]: no --data given — using the default data set {name!r}")
    from dp2o_core.stages.data import data_stage_config, item_signatures

    dataset = resolved["data"].build()
    expected = store.expected_fingerprint(
        "data",
        data_stage_config(
            dataset, resolved["data"].as_record(), resolved["degradation"].as_record(), config.seed
        ),
        group_signatures=item_signatures(dataset),
    )
    if _announce(store, "data", expected, show):
        prepare_data(store, resolved, config.seed, process, on_bad_image=on_bad_image)


def _sample_stage(store, config: RunConfig, resolved, model, process, show) -> None:
    settings = config.sample
    stage_config = sample_stage_config(
        resolved["backbone"].as_record(), config.seed, settings.num_candidates, settings.shared_noise
    )
    if not _announce(store, "sample", store.expected_fingerprint("sample", stage_config), show):
        return
    with (
        timed(store, "sample", "candidates", show) as facts,
        stage_progress("sample", show, unit="images") as (start, advance),
    ):
        facts["units"] = settings.num_candidates * run_sample_stage(
            store,
            model,
            stage_config,
            seed=config.seed,
            count=settings.num_candidates,
            shared_noise=settings.shared_noise,
            process=process,
            on_start=start,
            on_progress=advance,
        )


def _score_stage(store, resolved, process, show) -> None:
    reward_model = resolved["reward"].build()
    stage_config = score_stage_config(reward_model, resolved["reward"].as_record())
    if not _announce(store, "score", store.expected_fingerprint("score", stage_config), show):
        return
    samples_per_group = int((store.record("sample") or {}).get("config", {}).get("num_candidates", 0) or 0)
    with (
        timed(store, "score", "candidates", show) as facts,
        stage_progress("score", show) as (start, advance),
    ):
        facts["units"] = (samples_per_group or 1) * run_score_stage(
            store, reward_model, stage_config, process=process, on_start=start, on_progress=advance
        )


def _pairs_stage(store, resolved, show) -> None:
    from dp2o_core.stages.pairs import make_pairs, pairs_stage_config  # numpy: not at start-up

    keys = ("reward", "selector", "weighting")
    stage_config = pairs_stage_config({key: resolved[key].as_record() for key in keys})
    if not _announce(store, "pairs", store.expected_fingerprint("pairs", stage_config), show):
        return
    components = {key: resolved[key].build() for key in keys}
    with timed(store, "pairs", "pairs") as facts:
        result = make_pairs(
            store, components["reward"], components["selector"], components["weighting"], stage_config
        )
        facts["units"] = result.summary.pairs
    s = result.summary
    console.print(
        f"  {s.pairs} pairs from {s.groups} groups; weight mean {s.weight_mean:.3f} "
        f"(min {s.weight_min:.3f}, max {s.weight_max:.3f}); reward gap mean {s.gap_mean:.3f}"
    )


def _train_stage(store, config: RunConfig, resolved, model, accelerator, resume: bool, show: bool):
    from dp2o_core.stages.train import run_train_stage

    stage_config = train_stage_config(resolved["backbone"].as_record(), config.train, config.seed)
    if resume and not _announce(store, "train", store.expected_fingerprint("train", stage_config), show):
        return None
    if not resume and show:
        console.print("[bold]train[/]: --restart — training from the start")
    stages = [("conditions", "groups"), ("train", "steps")]
    with stages_progress(show, stages) as (prepare_callbacks, (start, advance)):
        start(config.train.max_steps)

        shown = [0]

        def on_step(metrics) -> None:
            advance(
                metrics.step - shown[0],
                note=f"loss {metrics.loss:.4f}  acc {metrics.implicit_accuracy:.2f}  "
                f"margin {metrics.reward_margin:+.3f}",
            )
            shown[0] = metrics.step

        with timed(store, "train", "steps", show) as facts:
            result = run_train_stage(
                store,
                model,
                config.train,
                stage_config,
                accelerator,
                seed=config.seed,
                resume=resume,
                on_prepare=prepare_callbacks,
                on_step=on_step,
            )
            facts["units"] = result.steps - (result.resumed_from or 0)
        return result


def _eval_stage(store, config: RunConfig, manager, resolved, tuned: str, show: bool):
    """Base vs tuned on the held-out data (``eval_data``); returns the evaluation."""
    from dp2o_cli.eval_cmd import build_scorers
    from dp2o_cli.progress import stage_progress

    from dp2o_core.evaluation import Evaluation, load_inputs
    from dp2o_core.specs import parse_spec, resolve_spec
    from dp2o_core.stages import without_runtime_options
    from dp2o_core.stages.eval import eval_stage_config, read_eval, run_eval_stage
    from dp2o_core.stages.sample import RUNTIME_OPTIONS

    held_out = resolve_spec(manager, "dataset", config.eval_data, None)
    degradation = resolved.get("degradation") or config.resolve(manager, ("degradation",))["degradation"]
    num_samples = config.eval.num_samples or config.sample.num_candidates
    base_record = without_runtime_options(resolved["backbone"].as_record(), RUNTIME_OPTIONS)
    records = {
        "eval_data": held_out.as_record(),
        "degradation": degradation.as_record(),
        "reward": resolved["reward"].as_record(),
        "base": base_record,
    }
    settings = {**config.eval.model_dump(), "num_samples": num_samples}
    stage_config = eval_stage_config(records, settings, config.seed)
    if not _announce(store, "eval", store.expected_fingerprint("eval", stage_config), show):
        return Evaluation.from_record(read_eval(store))
    reward_model = resolved["reward"].build()
    scorers, unavailable = build_scorers(
        manager, config.eval.metrics, exclude=[i.name for i in reward_model.metrics()]
    )
    dataset = held_out.build()
    inputs = load_inputs(dataset, degradation.build() if dataset.synthesises_lr else None, config.seed)
    tuned_backbone = resolve_spec(manager, "backbone", parse_spec(tuned, "backbone"), None)
    models = [
        ("base", str(configured_spec(resolved["backbone"])), resolved["backbone"].build()),
        ("tuned", tuned, tuned_backbone.build()),
    ]
    with (
        timed(store, "eval", "samples") as facts,
        stage_progress("eval", show, unit="inputs") as (
            start,
            advance,
        ),
    ):
        start(len(inputs) * len(models) * config.eval.seeds)
        evaluation = run_eval_stage(
            store,
            models,
            inputs,
            scorers,
            reward_model,
            stage_config,
            num_samples=num_samples,
            seeds=config.eval.seeds,
            seed=config.seed,
            unavailable=unavailable,
            on_progress=advance,
        )
        facts["units"] = len(inputs) * len(models) * config.eval.seeds * num_samples
    return evaluation


# -- the summary ------------------------------------------------------------------------------
def _print_summary(store: RunStore, tuned: str, result: Any, evaluation: Any, report: Path) -> None:
    completion = store.completion("train") or {}
    weights = store.root / completion.get("weights", "train/final")
    final = completion.get("final") or {}
    table = Table(title=f"dp2o train — {store.root}", title_justify="left", show_header=False)
    table.add_column("")
    table.add_column("")
    table.add_row("tuned weights", str(weights))
    table.add_row(
        "steps", f"{completion.get('steps', '-')} ({completion.get('pairs', '-')} pairs in the run)"
    )
    if result is not None and result.resumed_from:
        table.add_row("resumed from", f"step {result.resumed_from}")
    for key, label in (
        ("loss", "final loss"),
        ("implicit_accuracy", "implicit accuracy"),
        ("winner_margin", "winner error − reference"),
        ("loser_margin", "loser error − reference"),
        ("reward_margin", "reward margin −β/2·Δ"),
    ):
        if key in final:
            table.add_row(label, f"{final[key]:.5g}")
    table.add_row("training curves", str(store.stage_dir("train") / "metrics.jsonl"))
    console.print(table)
    if evaluation is not None:
        from dp2o_cli.eval_cmd import print_evaluation

        print_evaluation(evaluation, title=f"held-out evaluation — {len(evaluation.inputs)} inputs")
    console.print(f"Report: {report}", soft_wrap=True)
    console.print("Upscale with the tuned model:")
    console.print(f"  dp2o upscale LR_IMAGES OUTPUT --backbone '{tuned}'", soft_wrap=True)


def configured_spec(backbone: Resolved) -> Spec:
    """The backbone spec with the run's non-default options (the device left out)."""
    options = backbone.options
    changed = {
        name: value
        for name, value in options.model_dump(mode="json").items()
        if value != type(options).model_fields[name].default and name != "device"
    }
    return Spec(backbone.registration.name, changed)


def tuned_spec(backbone: Resolved, model: Any, weights: Path) -> str:
    """The backbone spec with the run's non-default options and the tuned weights."""
    spec = configured_spec(backbone)
    return str(Spec(spec.name, {**spec.options, **model.tuned_options(weights)}))
