"""``dp2o score``: raw metric scores for every candidate of a run."""

from __future__ import annotations

import typer
from dp2o_cli.options import ConfigFile, Redo, RewardSpec, RunDir, ShardOption
from dp2o_cli.output import console
from dp2o_cli.run_config import load_run_config
from dp2o_cli.runs import open_run

from dp2o_core.config import recorded_config
from dp2o_core.pipeline import Pipeline, RunOptions
from dp2o_core.store import RunStore


def score(
    ctx: typer.Context,
    run: RunDir,
    reward: RewardSpec = None,
    config_file: ConfigFile = None,
    redo: Redo = False,
    shard: ShardOption = None,
) -> None:
    """Score every candidate in RUN with every metric the reward needs (sharded under accelerate).

    With --shard K/N it is one of N jobs that score the run together (once its sampling is done).
    """
    # without --reward or --config: the reward the run recorded (else the paper's hybrid)
    base = recorded_config(RunStore(run)) if config_file is None else None
    config = load_run_config(config_file, base=base, run=run, reward=reward)
    context = open_run(ctx, run, config, RunOptions(redo=redo, completes=("score",)), shard=shard)
    results = Pipeline.method().select("score").run(context, announce=False)
    if context.process.is_main:
        status = context.store.status("score")
        scored = results["score"].result if results["score"] is not None else 0
        metrics = ", ".join(m.name for m in context.build("reward").metrics())
        console.print(
            f"score: {status.state} — {status.groups_done}/{status.groups_total} groups "
            f"({scored} scored now{f' by shard {shard}' if shard else ''}) with {metrics}",
            markup=False,
        )
