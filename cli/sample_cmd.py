"""``dp2o sample``: the sample stage — M candidates per LR input of a run (after its data stage)."""

from __future__ import annotations

import typer
from dp2o_cli.options import (
    BackboneSpec,
    ConfigFile,
    DataSpec,
    DegradationSpec,
    NumCandidates,
    OnBadImage,
    PrompterSpec,
    Redo,
    RunDir,
    Seed,
    ShardOption,
    SharedNoise,
)
from dp2o_cli.output import console
from dp2o_cli.run_config import load_run_config
from dp2o_cli.runs import open_run

from dp2o_core.config import recorded_config
from dp2o_core.errors import UsageError
from dp2o_core.pipeline import Pipeline, RunOptions
from dp2o_core.specs import Spec
from dp2o_core.store import RunStore


def sample(
    ctx: typer.Context,
    run: RunDir,
    backbone: BackboneSpec = None,
    data: DataSpec = None,
    degradation: DegradationSpec = None,
    prompter: PrompterSpec = None,
    config_file: ConfigFile = None,
    seed: Seed = None,
    num_candidates: NumCandidates = None,
    shared_noise: SharedNoise = None,
    on_bad_image: OnBadImage = "error",
    redo: Redo = False,
    shard: ShardOption = None,
) -> None:
    """Sample M candidates per LR input of RUN (runs the data stage first when --data is given).

    Without --config it starts from the backbone and settings the run recorded. With --shard K/N
    it is one of N jobs that sample the run together (prepare its data once first).
    """
    if shard is not None and data is not None:
        raise UsageError(
            f"--data cannot be given with --shard: prepare the run's data once (dp2o prepare {run} --data "
            "SPEC), then start the shard jobs without --data"
        )
    base = recorded_config(RunStore(run)) if config_file is None else None
    config = load_run_config(
        config_file, base=base, run=run, backbone=backbone, data=data, degradation=degradation,
        prompter=prompter, seed=seed,
        sample={"num_candidates": num_candidates, "shared_noise": shared_noise},
    )  # fmt: skip
    if data is None and config_file is None:
        config = config.model_copy(update={"data": Spec(None)})  # the run's data stage, as it is
    options = RunOptions(on_bad_image=on_bad_image, owns=("sample",), redo=redo, completes=("sample",))
    context = open_run(ctx, run, config, options, shard=shard)
    # with --data the data stage runs first; without it the run's data stage must exist
    stages = ("data", "sample") if config.data.name is not None else ("sample",)
    results = Pipeline.method().select(*stages).run(context, announce=False)
    if context.process.is_main:
        status = context.store.status("sample")
        sampled = results["sample"].result if results["sample"] is not None else 0
        console.print(
            f"sample: {status.state} — {status.groups_done}/{status.groups_total} groups "
            f"({sampled} sampled now{f' by shard {shard}' if shard else ''}), "
            f"{config.sample.num_candidates} candidates each, in {run}",
            markup=False,
        )
