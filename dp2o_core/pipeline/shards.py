"""Shard jobs in the pipeline (``dp2o sample RUN --shard K/N``; see :mod:`dp2o_core.store.sharding`).

Many jobs started separately fill one stage of one run, so two things are checked before
any of them writes:

- a shard job (:func:`check_shard_job`) finds no other job on its shard, the stages it reads
  done and the stage it fills recorded with its own settings — otherwise it stops with one
  line naming the other job or the difference, before any model is loaded (exit status 75
  when what it reads is still being made by other shard jobs: it can wait and try again).
  It never clears or redoes anything (other jobs may be writing), so it takes no ``--redo``;
- any other command (:func:`refuse_finishing_shards`) does not quietly do the rest of a stage
  that shard jobs are filling as a step towards something else (``dp2o train`` sampling a
  missing shard in one process for days): it names the shards that are not finished. The
  command of the stage itself (``dp2o sample`` for ``sample``) may finish it in one job.
"""

from __future__ import annotations

from collections.abc import Sequence

from dp2o_core.errors import NotYetError, UsageError
from dp2o_core.pipeline.context import RunContext
from dp2o_core.pipeline.guard import own_change
from dp2o_core.pipeline.stage import Stage
from dp2o_core.store.lock import StageLockedError, probe_holder
from dp2o_core.store.runstore import ShardMismatchError


def check_shard_job(stages: Sequence[Stage], ctx: RunContext) -> None:
    """Raise :class:`~dp2o_core.errors.UsageError` unless shard job ``ctx.process.shard`` can
    fill ``stages`` as the run has them (a no-op for a command that is no shard job)."""
    from dp2o_core.pipeline.runner import stage_config

    shard, store = ctx.process.shard, ctx.store
    if shard is None:
        return
    if ctx.options.redo:
        raise UsageError(
            f"--redo cannot be given with --shard {shard}: a shard job never discards work that other "
            "jobs may be writing. To redo a stage, stop its shard jobs, remove the stage's folder in the "
            "run, and start them again."
        )
    for stage in stages:
        holder = probe_holder(store.stage_lock(stage.name, ctx.process).path)
        if holder is not None:
            raise StageLockedError(
                f"shard {shard} of stage {stage.name!r} of run {store.root} is being run by another job "
                f"({holder}); two jobs never fill one shard. Wait for it, or give this job another shard."
            )
        for upstream in stage.upstream:
            status = store.status(upstream)
            if status.state != "done":
                left = store.unfinished_shards(upstream) if status.state == "partial" else ""
                raise (NotYetError if left else UsageError)(
                    f"shard {shard}: stage {stage.name!r} reads stage {upstream!r} of run {store.root}, "
                    f"which is {status.state}. "
                    + (
                        left
                        or f"Run it once first ({_FIRST[upstream].format(run=store.root)}), then the jobs."
                    )
                )
        record = store.record(stage.name)
        if record is None:
            continue
        why = own_change(store, stage, ctx, stage_config(stage, ctx), record)
        if why:
            raise ShardMismatchError(
                f"shard {shard}: stage {stage.name!r} of run {store.root} was started with other settings — "
                f"{why}. Give every shard job the same settings (without options a shard job takes those "
                f"the run recorded); to redo the stage with new ones, stop its jobs and remove "
                f"{store.stage_dir(stage.name)} first. Nothing was written."
            )


def refuse_finishing_shards(stages: Sequence[Stage], ctx: RunContext) -> None:
    """Raise :class:`~dp2o_core.errors.UsageError` naming the unfinished shards of each of
    ``stages`` that shard jobs are filling, unless this command may finish it
    (:attr:`~dp2o_core.pipeline.context.RunOptions.completes`) or is a shard job itself."""
    if ctx.process.shard is not None:
        return
    for stage in stages:
        if stage.name in ctx.options.completes or ctx.store.shard_record(stage.name) is None:
            continue
        if ctx.store.status(stage.name).state != "partial":
            continue
        left = ctx.store.unfinished_shards(stage.name)
        if left:
            raise UsageError(
                f"stage {stage.name!r} of run {ctx.store.root} is being filled by shard jobs and is not "
                f"finished: {left}"
            )


#: The command that runs a stage a shard job reads, once before the shard jobs.
_FIRST = {
    "data": "dp2o prepare {run} --data SPEC",
    "sample": "dp2o sample {run}",
    "score": "dp2o score {run}",
}
