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
    RunDir,
    Seed,
    SharedNoise,
)
from dp2o_cli.output import console
from dp2o_cli.run_config import load_run_config
from dp2o_cli.runs import open_run

from dp2o_core.pipeline import Pipeline, RunOptions


def sample(
    ctx: typer.Context,
    run: RunDir,
    backbone: BackboneSpec = None,
    data: DataSpec = None,
    degradation: DegradationSpec = None,
    config_file: ConfigFile = None,
    seed: Seed = None,
    num_candidates: NumCandidates = None,
    shared_noise: SharedNoise = None,
    on_bad_image: OnBadImage = "error",
) -> None:
    """Sample M candidates per LR input of RUN (runs the data stage first when --data is given)."""
    config = load_run_config(
        config_file, run=run, backbone=backbone, data=data, degradation=degradation, seed=seed,
        sample={"num_candidates": num_candidates, "shared_noise": shared_noise},
    )  # fmt: skip
    context = open_run(ctx, run, config, RunOptions(on_bad_image=on_bad_image, owns=("sample",)))
    # with --data the data stage runs first; without it the run's data stage must exist
    stages = ("data", "sample") if config.data.name is not None else ("sample",)
    results = Pipeline.method().select(*stages).run(context, announce=False)
    if context.process.is_main:
        status = context.store.status("sample")
        sampled = results["sample"].result if results["sample"] is not None else 0
        console.print(
            f"sample: {status.state} — {status.groups_done}/{status.groups_total} groups "
            f"({sampled} sampled now), {config.sample.num_candidates} candidates each, in {run}",
            markup=False,
        )
