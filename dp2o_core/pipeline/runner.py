"""The :class:`Pipeline`: stages run in order against one run (see the package docstring)."""

from __future__ import annotations

from collections.abc import Sequence

from dp2o_core.config import SETTINGS_SECTIONS, record_run_config
from dp2o_core.errors import Dp2oError
from dp2o_core.pipeline.context import RunContext, StageRun, _ignore
from dp2o_core.pipeline.guard import refuse_discarding
from dp2o_core.pipeline.shards import check_shard_job, refuse_finishing_shards
from dp2o_core.pipeline.stage import Stage
from dp2o_core.preflight import Check, ensure
from dp2o_core.specs import Resolved
from dp2o_core.stages.timings import timed
from dp2o_core.store import StageStatus


class Pipeline:
    """Stages run in order against one run (see the module docstring)."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        names = [stage.name for stage in stages]
        for index, stage in enumerate(stages):
            later = [up for up in stage.upstream if up in names[index:]]
            if later:
                raise ValueError(f"stage {stage.name!r} comes before its upstream stage {later[0]!r}")
        self.stages = list(stages)

    @classmethod
    def method(cls) -> Pipeline:
        """Every stage of the method, in order."""
        # each stage is one module of dp2o_core.stages, imported when a pipeline is made (the
        # pairs stage needs numpy, which a command such as `dp2o plugins` never loads)
        from dp2o_core.stages.data import DataStage
        from dp2o_core.stages.eval import EvalStage
        from dp2o_core.stages.pairs import PairsStage
        from dp2o_core.stages.sample import SampleStage
        from dp2o_core.stages.score import ScoreStage
        from dp2o_core.stages.train import TrainStage

        return cls([DataStage(), SampleStage(), ScoreStage(), PairsStage(), TrainStage(), EvalStage()])

    def select(self, *names: str) -> Pipeline:
        """The named stages only (in pipeline order)."""
        known = {stage.name for stage in self.stages}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"no stage named {unknown[0]!r} (stages: {', '.join(sorted(known))})")
        return Pipeline([stage for stage in self.stages if stage.name in names])

    @property
    def names(self) -> list[str]:
        """The stage names, in order."""
        return [stage.name for stage in self.stages]

    def resolve(self, ctx: RunContext) -> dict[str, Resolved]:
        """Resolve every component the stages need (a misspelt name or option fails here)."""
        keys: list[str] = []
        for stage in self.stages:
            keys += [key for key in stage.components(ctx) if key not in keys]
        for key in keys:
            ctx.component(key)
        return ctx.resolved

    def working_stages(self, ctx: RunContext, force: Sequence[str] = ()) -> list[Stage]:
        """The stages that will do work: not current, or forced, or downstream of one that will."""
        working: list[Stage] = []
        for stage in self.stages:
            if stage.main_only and not ctx.process.is_main or stage.kept(ctx) is not None:
                continue
            names = {s.name for s in working}
            if stage.name in force or stage.forced(ctx) or any(up in names for up in stage.upstream):
                working.append(stage)
                continue
            try:
                state = _status(stage, ctx, stage_config(stage, ctx)).state
            except Dp2oError:  # an upstream stage outside this pipeline is not done: the run says so
                state = "missing"
            if state != "done":
                working.append(stage)
        return working

    def preflight(self, ctx: RunContext, force: Sequence[str] = ()) -> list[Check]:
        """Every requirement of the stages that will work, each once (nothing is loaded)."""
        self.resolve(ctx)
        seen: set[tuple[str, str]] = set()
        checks: list[Check] = []
        for stage in self.working_stages(ctx, force):
            for check in stage.checks(ctx):
                if (check.component, check.item) not in seen:
                    seen.add((check.component, check.item))
                    checks.append(check)
        return checks

    def ensure_ready(self, ctx: RunContext, force: Sequence[str] = ()) -> None:
        """Raise :class:`~dp2o_core.preflight.NotReadyError` listing every missing requirement,
        then :class:`~dp2o_core.pipeline.guard.FinishedWorkError` when running would discard
        finished sampling or scoring without ``--redo``; a shard job instead stops when the run
        differs from its settings, and another command when it would finish shard jobs' work
        as a side effect (:mod:`dp2o_core.pipeline.shards`)."""
        check_shard_job(self.stages, ctx)
        refuse_finishing_shards(self.stages, ctx)
        ensure(self.preflight(ctx, force))
        if ctx.process.shard is None:
            refuse_discarding(self.stages, ctx)

    def run(
        self,
        ctx: RunContext,
        *,
        announce: bool = True,
        force: Sequence[str] = (),
        check: bool = True,
    ) -> dict[str, StageRun | None]:
        """Run the stages; a stage that is current is skipped (None in the result) unless it
        is in ``force`` or says it must run. ``announce`` prints each stage's state first.

        Before anything is written: every component is resolved and, with ``check`` (skip it
        only right after :meth:`ensure_ready`), every requirement checked and the run's finished
        sampling and scoring guarded. Then process 0 records ``RUN/config.json``.
        """
        self.resolve(ctx)
        if check:
            self.ensure_ready(ctx, force)
        if ctx.process.is_main:
            ctx.claim_run()
            owns = tuple(s for s in ctx.options.owns if s in SETTINGS_SECTIONS)
            record_run_config(ctx.store, ctx.config, ctx.resolved, owns=owns)
        results: dict[str, StageRun | None] = {}
        for stage in self.stages:
            results[stage.name] = self._run_stage(stage, ctx, announce, stage.name in force)
            ctx.barrier()
        return results

    def _run_stage(self, stage: Stage, ctx: RunContext, announce: bool, force: bool) -> StageRun | None:
        say = ctx.reporter.announce if announce and ctx.process.is_main else _ignore
        if stage.main_only and not ctx.process.is_main:
            return None
        kept = stage.kept(ctx)
        if kept is not None:
            say(stage.name, f"current — skipped ({kept})")
            return None
        config = stage_config(stage, ctx)
        status = _status(stage, ctx, config)
        reason = stage.forced(ctx)
        if status.state == "done" and reason is None and not force:
            say(stage.name, "current — skipped")
            return None
        say(stage.name, reason or describe_status(status))
        # a shard job's time is not the stage's: it is left out of the run's timings
        with timed(
            ctx.store, stage.name, stage.unit, ctx.process.is_main and ctx.process.shard is None
        ) as facts:
            outcome = stage.run(ctx, config)
            facts["units"] = outcome.units
        if outcome.note and announce and ctx.process.is_main:
            ctx.reporter.note(stage.name, outcome.note)
        return outcome


def stage_config(stage: Stage, ctx: RunContext) -> dict:
    """The configuration a stage's fingerprint is made from: its own, and in a later round of
    an iterative run the round (its number, reference and the previous round's training)."""
    config = stage.config(ctx)
    if ctx.round is not None:
        config = {**config, "round": ctx.round.record(stage.name)}
    return config


def _status(stage: Stage, ctx: RunContext, config: dict) -> StageStatus:
    """The stage's state against the fingerprint its ``config`` would give it now."""
    expected = ctx.store.expected_fingerprint(
        stage.name, config, group_signatures=stage.group_signatures(ctx)
    )
    return ctx.store.status(stage.name, expected=expected)


def describe_status(status: StageStatus) -> str:
    """What a run of a stage in ``status`` is about to do, in a few words."""
    if status.state == "partial":
        done = (
            f"{status.groups_done}/{status.groups_total} groups done"
            if status.groups_total
            else "interrupted"
        )
        return f"partial ({done}) — continuing"
    if status.state == "stale":
        return f"{status.reason} — redoing"
    if status.state == "damaged":
        return f"damaged ({status.reason}) — redoing the damaged groups"
    if status.state == "done":
        return "current — redoing"
    return "running"
