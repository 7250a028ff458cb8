"""``dp2o score``: raw metric scores for every candidate of a run."""

from __future__ import annotations

import typer
from dp2o_cli.options import ConfigFile, RewardSpec, RunDir
from dp2o_cli.output import console
from dp2o_cli.progress import stage_progress
from dp2o_cli.run_config import load_run_config, write_run_config
from dp2o_cli.state import CliState

from dp2o_core.stages.score import run_score_stage, score_stage_config
from dp2o_core.store import ProcessInfo, RunStore


def score(ctx: typer.Context, run: RunDir, reward: RewardSpec = None, config_file: ConfigFile = None) -> None:
    """Score every candidate in RUN with every metric the reward needs (sharded under accelerate)."""
    manager = ctx.ensure_object(CliState).manager
    config = load_run_config(config_file, run=run, reward=reward)
    resolved = config.resolve(manager, ("reward",))
    reward_model = resolved["reward"].build()
    store = RunStore(run)
    process = ProcessInfo.detect()
    stage_config = score_stage_config(reward_model, resolved["reward"].as_record())
    if process.is_main:
        write_run_config(store, config, resolved)
    with stage_progress("score", process.is_main) as (start, advance):
        scored = run_score_stage(
            store, reward_model, stage_config, process=process, on_start=start, on_progress=advance
        )
    if process.is_main:
        status = store.status("score")
        metrics = ", ".join(m.name for m in reward_model.metrics())
        console.print(
            f"score: {status.state} — {status.groups_done}/{status.groups_total} groups "
            f"({scored} scored now) with {metrics}"
        )
