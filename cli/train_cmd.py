"""``dp2o train``: the whole method — data, sample, score, pairs, train, eval — in one run directory.

Each stage is skipped when its outputs are current, continued when partial and redone when
its configuration or an upstream stage changed (:mod:`dp2o_core.pipeline`). Under
``accelerate launch`` sampling and scoring are sharded over the processes, pairs are made by
process 0 and training runs with DDP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from dp2o_cli.eval_view import print_evaluation, print_rounds
from dp2o_cli.options import (
    BackboneSpec,
    BatchSize,
    Beta,
    CheckpointEvery,
    ConfigFile,
    DataSpec,
    DegradationSpec,
    EvalData,
    FreshData,
    LearningRate,
    Loss,
    MaxSteps,
    MicroBatchSize,
    MixedPrecision,
    NumCandidates,
    OnBadImage,
    PrompterSpec,
    Redo,
    Reference,
    Resume,
    RewardSpec,
    Rounds,
    RunOption,
    Seed,
    SelectorSpec,
    SharedNoise,
    SwapLabels,
    Tracker,
    WarmupSteps,
    WeightingSpec,
)
from dp2o_cli.output import console
from dp2o_cli.run_config import load_run_config, paper_settings_unset
from dp2o_cli.runs import open_run
from dp2o_cli.state import CliState
from rich.markup import escape
from rich.table import Table

from dp2o_core.config import SETTINGS_SECTIONS, RunConfig, load_config, recorded_config
from dp2o_core.pipeline import Pipeline, RunContext, RunOptions, StageRun, run_rounds, tuned_spec
from dp2o_core.presets import embedded_default
from dp2o_core.specs import parse_spec
from dp2o_core.store import RunStore

#: dp2o train's parameters that are not run configuration (how the command runs)
NOT_CONFIGURATION = ("ctx", "resume", "redo", "on_bad_image")


def train(
    ctx: typer.Context,
    run: RunOption = None,
    config_file: ConfigFile = None,
    backbone: BackboneSpec = None,
    data: DataSpec = None,
    degradation: DegradationSpec = None,
    prompter: PrompterSpec = None,
    reward: RewardSpec = None,
    selector: SelectorSpec = None,
    weighting: WeightingSpec = None,
    eval_data: EvalData = None,
    seed: Seed = None,
    num_candidates: NumCandidates = None,
    shared_noise: SharedNoise = None,
    max_steps: MaxSteps = None,
    batch_size: BatchSize = None,
    micro_batch_size: MicroBatchSize = None,
    learning_rate: LearningRate = None,
    warmup_steps: WarmupSteps = None,
    beta: Beta = None,
    loss: Loss = None,
    swap_labels: SwapLabels = None,
    mixed_precision: MixedPrecision = None,
    checkpoint_every: CheckpointEvery = None,
    tracker: Tracker = None,
    rounds: Rounds = None,
    reference: Reference = None,
    fresh_data: FreshData = None,
    resume: Resume = True,
    redo: Redo = False,
    on_bad_image: OnBadImage = "error",
) -> None:
    """Run sample → score → pairs → train → eval, skipping what is current and continuing what is partial.

    With no --config and no backbone but tiny-sr it runs the embedded default: the bundled tiny-sr model
    on scikit-image's photographs with the offline reward, on a CPU in minutes (docs/embedded.md).
    On an existing run it starts from the configuration the run recorded; a change that would discard
    finished sampling or scoring needs --redo.
    """
    flags = {key: value for key, value in locals().items() if key not in NOT_CONFIGURATION}
    config, source = train_config(manager=ctx.ensure_object(CliState).manager, **flags)
    run_dir = config.run or default_run_dir(config.backbone.name)
    options = RunOptions(on_bad_image=on_bad_image, resume=resume, owns=SETTINGS_SECTIONS, redo=redo)
    context = open_run(ctx, run_dir, config, options)
    if context.process.is_main:
        _announce(source, run_dir)
    pipeline = train_pipeline(config)
    pipeline.ensure_ready(context)  # every missing weight, package or file, before anything is written

    def run_round(round_context: RunContext) -> dict[str, StageRun | None]:
        round_context.accelerator = _accelerator(round_context, config)
        # round 1 was checked above; a later round's model exists only once the round before it trained
        return pipeline.run(round_context, check=round_context is not context)

    finished = list(run_rounds(context, run_round))
    last, results = finished[-1]
    if context.process.is_main:
        from dp2o_core.report import write_report

        report = write_report(context.store)
        _print_summary(last, tuned_spec(last), results, report)
        if len(finished) > 1:
            print_rounds(context.store.root)
    last.barrier()
    last.accelerator.state.destroy_process_group()


def train_config(
    config_file: Path | None,
    run: Path | None,
    num_candidates: int | None,
    shared_noise: bool | None,
    rounds: int | None = None,
    reference: str | None = None,
    fresh_data: bool | None = None,
    manager: Any = None,
    **flags: Any,
) -> tuple[RunConfig, str]:
    """The configuration ``dp2o train`` (and ``dp2o check``) runs with, and where it comes from
    (``"embedded"``, ``"recorded"``, ``"file"`` or ``"defaults"``), with the flags on top of:

    - the config file, when one is given;
    - else the run's own record (``RUN/config.json``) when the run exists: a run is continued
      as it was made, never redone with defaults because its flags were not repeated;
    - else the embedded default for tiny-sr, else the paper's defaults with the backbone's own
      paper settings (M and the selector: C-FLUX samples 64 with N/M = 1/16) where no flag sets them.
    """
    sections = ("max_steps", "batch_size", "micro_batch_size", "learning_rate", "warmup_steps", "beta",
                "loss", "swap_labels", "mixed_precision", "checkpoint_every", "tracker")  # fmt: skip
    train = {key: flags.pop(key) for key in sections}
    backbone = flags.get("backbone")
    backbone_name = parse_spec(backbone, "backbone").name if backbone is not None else None
    base, source, paper = None, "file", {}
    if config_file is not None:
        base = load_config(config_file)
        paper = paper_settings_unset(manager, backbone, base)
    else:
        recorded = recorded_config(RunStore(run or default_run_dir(backbone_name)))
        # tiny-sr's natural setting is the embedded one; other backbones start from the paper's defaults
        if recorded is not None:
            base, source = recorded, "recorded"
        elif backbone_name in (None, "tiny-sr"):
            base, source = embedded_default(), "embedded"
        else:
            source = "defaults"
            paper = paper_settings_unset(manager, backbone, None)
    num_candidates = num_candidates if num_candidates is not None else paper.get("num_candidates")
    flags["selector"] = flags.get("selector") or paper.get("selector")
    config = load_run_config(
        None, base=base, run=run, train=train,
        sample={"num_candidates": num_candidates, "shared_noise": shared_noise},
        rounds={"count": rounds, "reference": reference, "fresh_data": fresh_data}, **flags,
    )  # fmt: skip
    return config, source


def default_run_dir(backbone_name: str | None) -> Path:
    """Where ``dp2o train`` keeps a run given no ``--run``: ``runs/<backbone>``."""
    return Path("runs") / (backbone_name or "tiny-sr")


def train_pipeline(config: RunConfig) -> Pipeline:
    """Every stage, less the held-out evaluation when no held-out data is configured."""
    pipeline = Pipeline.method()
    if config.eval_data.name is None:
        pipeline = pipeline.select(*[name for name in pipeline.names if name != "eval"])
    return pipeline


def _announce(source: str, run_dir: Path) -> None:
    """Say where the configuration comes from when the user did not name it."""
    if source == "embedded":
        text = (
            "Running the embedded default (tiny-sr on scikit-image's photographs, offline reward; "
            f"docs/embedded.md) in {run_dir}"
        )
    elif source == "recorded":
        text = (
            f"Continuing {run_dir} with the configuration it recorded (config.json), the flags given on top"
        )
    else:
        return
    console.print(text, markup=False, soft_wrap=True)


def _accelerator(context: RunContext, config: RunConfig) -> Any:
    """accelerate's Accelerator for the train stage (and the barriers between stages)."""
    from dp2o_core.training.trainer import make_accelerator

    on_cpu = getattr(context.component("backbone").options, "device", "auto") == "cpu" or None
    return make_accelerator(config.train, context.store.stage_dir("train"), cpu=on_cpu)


def _print_summary(
    context: RunContext, tuned: str, results: dict[str, StageRun | None], report: Path
) -> None:
    """The tuned weights, the final training metrics, the held-out table and what to run next."""
    from dp2o_core.evaluation import Evaluation, read_eval

    store = context.store
    completion = store.completion("train") or {}
    final = completion.get("final") or {}
    table = Table(title=f"dp2o train — {escape(str(store.root))}", title_justify="left", show_header=False)
    table.add_column("")
    table.add_column("")
    table.add_row("tuned weights", escape(str(store.root / completion.get("weights", "train/final"))))
    table.add_row(
        "steps", f"{completion.get('steps', '-')} ({completion.get('pairs', '-')} pairs in the run)"
    )
    trained = results.get("train")
    if trained is not None and trained.result.resumed_from:
        table.add_row("resumed from", f"step {trained.result.resumed_from}")
    for key, label in (
        ("loss", "final loss"),
        ("implicit_accuracy", "implicit accuracy"),
        ("winner_margin", "winner error − reference"),
        ("loser_margin", "loser error − reference"),
        ("reward_margin", "reward margin −β/2·Δ"),
    ):
        if key in final:
            table.add_row(label, f"{final[key]:.5g}")
    table.add_row("training curves", escape(str(store.stage_dir("train") / "metrics.jsonl")))
    console.print(table)
    if "eval" in results:
        evaluated = results["eval"]
        stored = read_eval(store)
        evaluation = evaluated.result if evaluated is not None else stored and Evaluation.from_record(stored)
        if evaluation:
            print_evaluation(evaluation, title=f"held-out evaluation — {len(evaluation.inputs)} inputs")
    console.print(f"Report: {report}", soft_wrap=True, markup=False)
    console.print("Upscale with the tuned model:")
    console.print(f"  dp2o upscale LR_IMAGES OUTPUT --backbone '{tuned}'", soft_wrap=True, markup=False)
