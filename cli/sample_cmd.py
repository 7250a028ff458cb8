"""``dp2o sample``: the sample stage — M candidates per LR input of a run."""

from __future__ import annotations

from typing import Annotated

import typer
from dp2o_cli.options import (
    BackboneSpec,
    ConfigFile,
    DataSpec,
    DegradationSpec,
    NumCandidates,
    RunDir,
    Seed,
)
from dp2o_cli.output import console
from dp2o_cli.prepare_cmd import prepare_data
from dp2o_cli.progress import stage_progress
from dp2o_cli.run_config import load_run_config, write_run_config
from dp2o_cli.state import CliState

from dp2o_core.stages.sample import run_sample_stage, sample_stage_config
from dp2o_core.store import ProcessInfo, RunStore


def sample(
    ctx: typer.Context,
    run: RunDir,
    backbone: BackboneSpec = None,
    data: DataSpec = None,
    degradation: DegradationSpec = None,
    config_file: ConfigFile = None,
    seed: Seed = None,
    num_candidates: NumCandidates = 32,
    shared_noise: Annotated[
        bool, typer.Option("--shared-noise", help="Candidate m of every group starts from seed + m.")
    ] = False,
) -> None:
    """Sample M candidates per LR input of RUN (runs the data stage first when --data is given)."""
    manager = ctx.ensure_object(CliState).manager
    config = load_run_config(
        config_file, run=run, backbone=backbone, data=data, degradation=degradation, seed=seed
    )
    store = RunStore(run)
    process = ProcessInfo.detect()
    keys = ("backbone", "data", "degradation") if config.data.name else ("backbone",)
    resolved = config.resolve(manager, keys)
    if config.data.name:
        prepare_data(store, resolved, config.seed, process)
    model = resolved["backbone"].build()
    if process.is_main:
        write_run_config(store, config, resolved, owns=("sample",))
    stage_config = sample_stage_config(
        resolved["backbone"].as_record(), config.seed, num_candidates, shared_noise
    )
    with stage_progress("sample", process.is_main, unit="images") as (start, advance):
        sampled = run_sample_stage(
            store,
            model,
            stage_config,
            seed=config.seed,
            count=num_candidates,
            shared_noise=shared_noise,
            process=process,
            on_start=start,
            on_progress=advance,
        )
    if process.is_main:
        status = store.status("sample")
        console.print(
            f"sample: {status.state} — {status.groups_done}/{status.groups_total} groups "
            f"({sampled} sampled now), {num_candidates} candidates each, in {run}"
        )
