"""The method as one pipeline: data → sample → score → pairs → train → eval.

Each stage is a :class:`Stage` object: its name (its upstream stages come from the run
store's :data:`~dp2o_core.store.runstore.STAGES`), the components it needs, a
:meth:`Stage.config` that yields the configuration its fingerprint is made from, and
:meth:`Stage.run`. A :class:`Pipeline` runs a selection of stages in order against one
:class:`RunContext`: it resolves every component the stages need before any of them works
(a misspelt option fails in a second, not after sampling), checks that everything the stages
that will work need is there (:mod:`dp2o_core.preflight`: weights, packages, data, disk) and
reports every problem at once before anything is written, computes each stage's
fingerprint once, skips what is current, continues what is partial, redoes what is stale,
times the work and waits for every process between stages.

Every CLI command that runs stages is a thin wrapper around this module: ``dp2o train``
runs the whole pipeline, ``dp2o sample`` the data and sample stages, and so on, so the
commands cannot drift apart. Library users drive it the same way::

    ctx = RunContext(RunStore(run), config, PluginManager(), ProcessInfo.detect())
    Pipeline.method().select("data", "sample").run(ctx)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

from dp2o_core.config import SETTINGS_SECTIONS, RunConfig, record_run_config
from dp2o_core.errors import Dp2oError, UsageError
from dp2o_core.options import RUNTIME
from dp2o_core.preflight import Check, component_checks, dataset_check, ensure, free_disk_check
from dp2o_core.specs import Resolved, Spec
from dp2o_core.stages.timings import timed
from dp2o_core.store import ProcessInfo, RunStore, StageStatus
from dp2o_core.store.runstore import STAGES

#: (start(total), advance(count, note=None)) — the callbacks that drive one progress bar.
ProgressCallbacks = tuple[Callable[[int], None], Callable[..., None]]


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None


class Reporter:
    """How a pipeline tells its user what happens. This base class says nothing (library
    use, other processes); the CLI's reporter prints to the console and draws progress bars."""

    def announce(self, stage: str, text: str) -> None:
        """One line about ``stage`` (``current — skipped``, ``partial — continuing``, …)."""

    def note(self, stage: str, text: str) -> None:
        """A line of what ``stage`` found, printed under its announcement (a pairs summary)."""

    @contextmanager
    def progress(self, bars: Sequence[tuple[str, str]]) -> Iterator[list[ProgressCallbacks]]:
        """Callbacks for one bar per (label, unit), shown while the block runs."""
        yield [(_ignore, _ignore) for _ in bars]


@dataclass(frozen=True)
class RunOptions:
    """How a command runs the stages, beyond the run configuration (nothing here is fingerprinted)."""

    #: stop at an unusable input image, or skip it and list it in the bad_images table
    on_bad_image: Literal["error", "skip"] = "error"
    #: continue training from the newest checkpoint (False: start training over)
    resume: bool = True
    #: data items loaded and degraded together
    data_batch_size: int = 16
    #: the settings sections (``sample``, ``train``, ``eval``) this command records in config.json
    owns: tuple[str, ...] = ()


@dataclass
class RunContext:
    """What the stages of one run share: the store, the configuration, the plugins, this
    process, the components (resolved and built once), the reporter and the accelerator."""

    store: RunStore
    config: RunConfig
    manager: Any
    process: ProcessInfo
    reporter: Reporter = field(default_factory=Reporter)
    options: RunOptions = field(default_factory=RunOptions)
    #: accelerate's Accelerator when the run trains (barriers between processes), else None
    accelerator: Any = None
    resolved: dict[str, Resolved] = field(default_factory=dict)
    _built: dict[str, Any] = field(default_factory=dict)
    #: the spec of the tuned model, once :func:`tuned_spec` has made it
    tuned: str | None = None
    #: values a stage computes once and uses twice (the data set's item signatures)
    computed: dict[str, Any] = field(default_factory=dict)

    def component(self, key: str) -> Resolved:
        """The configured component ``key`` (``backbone``, ``reward``, …), resolved once."""
        if key not in self.resolved:
            self.resolved.update(self.config.resolve(self.manager, (key,)))
        return self.resolved[key]

    def build(self, key: str) -> Any:
        """The component ``key`` built (models loaded) once and kept until :meth:`release`."""
        if key not in self._built:
            self._built[key] = self.component(key).build()
        return self._built[key]

    def release(self, key: str) -> None:
        """Drop a built component (a model's memory before the next one loads)."""
        self._built.pop(key, None)

    def barrier(self) -> None:
        """Wait until every process gets here (a no-op in one process)."""
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    @cached_property
    def keeps_run_data(self) -> bool:
        """No data set given and the run holds a finished data stage: the run keeps its data."""
        return self.config.data.name is None and self.store.status("data").state == "done"

    @property
    def seed(self) -> int:
        """The run's base seed."""
        return self.config.seed


@dataclass
class StageRun:
    """What one stage did in this process: units of work (for the timings), its result, and a
    line worth printing after it."""

    units: int | None = None
    result: Any = None
    note: str | None = None


class Stage:
    """One stage of the pipeline; subclasses fill in the hooks below."""

    name: ClassVar[str]
    #: what the stage's timing counts (images, candidates, pairs, steps, samples)
    unit: ClassVar[str] = "groups"
    #: True when process 0 does the stage alone (the others wait)
    main_only: ClassVar[bool] = False

    @property
    def upstream(self) -> tuple[str, ...]:
        """The stages whose outputs this one reads (their fingerprints enter this one's)."""
        return STAGES[self.name]

    def components(self, ctx: RunContext) -> tuple[str, ...]:
        """The configuration keys of the components this stage needs."""
        return ()

    def kept(self, ctx: RunContext) -> str | None:
        """A reason to keep what the run has without checking it (None: check as usual)."""
        return None

    def config(self, ctx: RunContext) -> dict[str, Any]:
        """The configuration this stage's output depends on (its fingerprint is made from it)."""
        raise NotImplementedError

    def group_signatures(self, ctx: RunContext) -> Mapping[str, str] | None:
        """Per-group signatures that enter the fingerprint (a changed one redoes its group)."""
        return None

    def forced(self, ctx: RunContext) -> str | None:
        """A reason to run even when current (None: skip when current)."""
        return None

    def checks(self, ctx: RunContext) -> list[Check]:
        """What this stage needs before it starts (the default: its components' readiness)."""
        return [check for key in self.components(ctx) for check in component_checks(ctx.component(key))]

    def run(self, ctx: RunContext, config: dict[str, Any]) -> StageRun:
        """Do (the rest of) the stage's work in this process."""
        raise NotImplementedError


# -- the stages ------------------------------------------------------------------------------
class DataStage(Stage):
    """List, load and degrade the data set once; store LR (and HR) images."""

    name = "data"
    unit = "images"

    def components(self, ctx: RunContext) -> tuple[str, ...]:
        return () if ctx.keeps_run_data else ("data", "degradation")

    def kept(self, ctx: RunContext) -> str | None:
        return "no --data given; using the run's" if ctx.keeps_run_data else None

    def config(self, ctx: RunContext) -> dict[str, Any]:
        from dp2o_core.stages.data import data_stage_config

        return data_stage_config(
            ctx.build("data"),
            ctx.component("data").as_record(),
            ctx.component("degradation").as_record(),
            ctx.seed,
        )

    def group_signatures(self, ctx: RunContext) -> Mapping[str, str]:
        from dp2o_core.stages.data import item_signatures

        # every item's files are listed and stat'ed once: for the fingerprint and for the writer
        if "item_signatures" not in ctx.computed:
            ctx.computed["item_signatures"] = item_signatures(ctx.build("data"))
        return ctx.computed["item_signatures"]

    def checks(self, ctx: RunContext) -> list[Check]:
        return [*super().checks(ctx), *items_check(ctx, "data")]

    def run(self, ctx: RunContext, config: dict[str, Any]) -> StageRun:
        from dp2o_core.stages.data import run_data_stage

        if ctx.config.data.name is None:
            name = ctx.component("data").registration.name
            ctx.reporter.announce(self.name, f"no --data given — using the default data set {name!r}")
        dataset = ctx.build("data")
        with ctx.reporter.progress([(self.name, "groups")]) as [(start, advance)]:
            result = run_data_stage(
                ctx.store,
                dataset,
                config,
                degradation=ctx.build("degradation") if dataset.synthesises_lr else None,
                seed=ctx.seed,
                process=ctx.process,
                on_bad_image=ctx.options.on_bad_image,
                batch_size=ctx.options.data_batch_size,
                signatures=self.group_signatures(ctx),
                on_start=start,
                on_progress=advance,
            )
        return StageRun(units=len(ctx.store.done_groups("data")), result=result)


class SampleStage(Stage):
    """M candidates per LR input from the frozen backbone."""

    name = "sample"
    unit = "candidates"

    def components(self, ctx: RunContext) -> tuple[str, ...]:
        return ("backbone",)

    def config(self, ctx: RunContext) -> dict[str, Any]:
        from dp2o_core.stages.sample import sample_stage_config

        settings = ctx.config.sample
        return sample_stage_config(
            ctx.component("backbone"), ctx.seed, settings.num_candidates, settings.shared_noise
        )

    def checks(self, ctx: RunContext) -> list[Check]:
        estimate = candidates_bytes(ctx)
        disk = [] if estimate is None else [free_disk_check(ctx.store.root, estimate, "the candidates")]
        return [*super().checks(ctx), *disk]

    def run(self, ctx: RunContext, config: dict[str, Any]) -> StageRun:
        from dp2o_core.stages.sample import run_sample_stage

        settings = ctx.config.sample
        with ctx.reporter.progress([(self.name, "images")]) as [(start, advance)]:
            sampled = run_sample_stage(
                ctx.store,
                ctx.build("backbone"),
                config,
                seed=ctx.seed,
                count=settings.num_candidates,
                shared_noise=settings.shared_noise,
                process=ctx.process,
                on_start=start,
                on_progress=advance,
            )
        return StageRun(units=settings.num_candidates * sampled, result=sampled)


class ScoreStage(Stage):
    """Raw scores of every candidate for every metric the reward needs."""

    name = "score"
    unit = "candidates"

    def components(self, ctx: RunContext) -> tuple[str, ...]:
        return ("reward",)

    def config(self, ctx: RunContext) -> dict[str, Any]:
        from dp2o_core.stages.score import score_stage_config

        return score_stage_config(ctx.build("reward"), ctx.component("reward"))

    def run(self, ctx: RunContext, config: dict[str, Any]) -> StageRun:
        from dp2o_core.stages.score import run_score_stage

        sample_config = (ctx.store.record("sample") or {}).get("config", {})
        per_group = int(sample_config.get("num_candidates", 0) or 0) or 1
        with ctx.reporter.progress([(self.name, "groups")]) as [(start, advance)]:
            scored = run_score_stage(
                ctx.store,
                ctx.build("reward"),
                config,
                process=ctx.process,
                on_start=start,
                on_progress=advance,
            )
        return StageRun(units=per_group * scored, result=scored)


class PairsStage(Stage):
    """Rewards, preference pairs and their weights from the scores (process 0 alone: the
    inter-group weight needs every group)."""

    name = "pairs"
    unit = "pairs"
    main_only = True

    def components(self, ctx: RunContext) -> tuple[str, ...]:
        return ("reward", "selector", "weighting")

    def config(self, ctx: RunContext) -> dict[str, Any]:
        from dp2o_core.stages.pairs import pairs_stage_config  # numpy: not at start-up

        return pairs_stage_config({key: ctx.component(key) for key in self.components(ctx)})

    def checks(self, ctx: RunContext) -> list[Check]:
        # the reward only recombines stored scores here: its metrics' weights are not needed
        return [check for key in ("selector", "weighting") for check in component_checks(ctx.component(key))]

    def run(self, ctx: RunContext, config: dict[str, Any]) -> StageRun:
        from dp2o_core.stages.pairs import make_pairs

        result = make_pairs(
            ctx.store, ctx.build("reward"), ctx.build("selector"), ctx.build("weighting"), config
        )
        s = result.summary
        note = (
            f"{s.pairs} pairs from {s.groups} groups; weight mean {s.weight_mean:.3f} "
            f"(min {s.weight_min:.3f}, max {s.weight_max:.3f}); reward gap mean {s.gap_mean:.3f}"
        )
        if s.groups_without_pairs:
            note += f"; {s.groups_without_pairs} groups without pairs (the selector chose none)"
        return StageRun(units=s.pairs, result=result, note=note)


class TrainStage(Stage):
    """Weighted Diffusion-DPO on the run's pairs, resumable from its checkpoints."""

    name = "train"
    unit = "steps"

    def components(self, ctx: RunContext) -> tuple[str, ...]:
        return ("backbone",)

    def config(self, ctx: RunContext) -> dict[str, Any]:
        from dp2o_core.stages.train import train_stage_config

        return train_stage_config(ctx.component("backbone"), ctx.config.train, ctx.seed)

    def forced(self, ctx: RunContext) -> str | None:
        return None if ctx.options.resume else "--restart — training from the start"

    def run(self, ctx: RunContext, config: dict[str, Any]) -> StageRun:
        from dp2o_core.stages.train import run_train_stage

        if ctx.accelerator is None:
            raise UsageError("the train stage needs an accelerator in its RunContext (make_accelerator)")
        settings = ctx.config.train
        bars = [("conditions", "groups"), ("train", "steps")]
        with ctx.reporter.progress(bars) as [prepare_callbacks, (start, advance)]:
            start(settings.max_steps)
            shown = [0]

            def on_step(metrics: Any) -> None:
                advance(
                    metrics.step - shown[0],
                    note=f"loss {metrics.loss:.4f}  acc {metrics.implicit_accuracy:.2f}  "
                    f"margin {metrics.reward_margin:+.3f}",
                )
                shown[0] = metrics.step

            result = run_train_stage(
                ctx.store,
                ctx.build("backbone"),
                settings,
                config,
                ctx.accelerator,
                seed=ctx.seed,
                resume=ctx.options.resume,
                on_prepare=prepare_callbacks,
                on_step=on_step,
            )
        return StageRun(units=result.steps - (result.resumed_from or 0), result=result)


class EvalStage(Stage):
    """The base and the tuned model on held-out data (``eval_data``), on the same seeds."""

    name = "eval"
    unit = "samples"
    main_only = True

    def components(self, ctx: RunContext) -> tuple[str, ...]:
        return ("eval_data", "degradation", "reward", "backbone")

    def config(self, ctx: RunContext) -> dict[str, Any]:
        from dp2o_core.evaluation import eval_stage_config
        from dp2o_core.stages.sample import NOT_SAMPLING

        records = {
            "eval_data": ctx.component("eval_data").as_record(),
            "degradation": ctx.component("degradation").as_record(),
            "reward": ctx.component("reward").as_record(),
            "base": ctx.component("backbone").fingerprint_record(NOT_SAMPLING),
        }
        return eval_stage_config(records, self._settings(ctx), ctx.seed)

    def checks(self, ctx: RunContext) -> list[Check]:
        return [*super().checks(ctx), *items_check(ctx, "eval_data")]

    @staticmethod
    def _settings(ctx: RunContext) -> dict[str, Any]:
        num_samples = ctx.config.eval.num_samples or ctx.config.sample.num_candidates
        return {**ctx.config.eval.model_dump(), "num_samples": num_samples}

    def run(self, ctx: RunContext, config: dict[str, Any]) -> StageRun:
        from dp2o_core.evaluation import EvalModel, build_scorers, evaluate, load_inputs, write_evaluation
        from dp2o_core.specs import parse_spec, resolve_spec

        settings = self._settings(ctx)
        tuned = tuned_spec(ctx)
        ctx.release("backbone")  # the base and the tuned model load fresh
        fingerprint = ctx.store.begin(self.name, config)
        reward = ctx.build("reward")
        scorers, unavailable = build_scorers(
            ctx.manager, ctx.config.eval.metrics, exclude=[i.name for i in reward.metrics()]
        )
        dataset = ctx.component("eval_data").build()
        degradation = ctx.build("degradation") if dataset.synthesises_lr else None
        inputs = load_inputs(dataset, degradation, ctx.seed)
        base = ctx.component("backbone")
        models = [
            EvalModel("base", str(configured_spec(base)), base.build()),
            EvalModel(
                "tuned",
                tuned,
                resolve_spec(ctx.manager, "backbone", parse_spec(tuned, "backbone"), None).build(),
            ),
        ]
        runs = len(inputs) * len(models) * settings["seeds"]
        with ctx.reporter.progress([(self.name, "inputs")]) as [(start, advance)]:
            start(runs)
            evaluation = evaluate(
                models,
                inputs,
                scorers,
                reward,
                num_samples=settings["num_samples"],
                seeds=settings["seeds"],
                seed=ctx.seed,
                on_progress=advance,
            )
        evaluation.unavailable = {**unavailable, **evaluation.unavailable}
        write_evaluation(ctx.store, evaluation, inputs, fingerprint)
        return StageRun(units=runs * settings["num_samples"], result=evaluation)


# -- the pipeline ----------------------------------------------------------------------------
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
            if (
                stage.name in force
                or stage.forced(ctx)
                or any(up in {s.name for s in working} for up in stage.upstream)
            ):
                working.append(stage)
                continue
            try:
                config = stage.config(ctx)
                expected = ctx.store.expected_fingerprint(
                    stage.name, config, group_signatures=stage.group_signatures(ctx)
                )
            except Dp2oError:  # an upstream stage outside this pipeline is not done: the run says so
                working.append(stage)
                continue
            if ctx.store.status(stage.name, expected=expected).state != "done":
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
        """Raise :class:`~dp2o_core.preflight.NotReadyError` listing every missing requirement."""
        ensure(self.preflight(ctx, force))

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
        only right after :meth:`ensure_ready`), every requirement checked. Then process 0
        records ``RUN/config.json``.
        """
        self.resolve(ctx)
        if check:
            self.ensure_ready(ctx, force)
        if ctx.process.is_main:
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
        config = stage.config(ctx)
        expected = ctx.store.expected_fingerprint(
            stage.name, config, group_signatures=stage.group_signatures(ctx)
        )
        status = ctx.store.status(stage.name, expected=expected)
        reason = stage.forced(ctx) or ("forced" if force else None)
        if status.state == "done" and reason is None:
            say(stage.name, "current — skipped")
            return None
        say(stage.name, reason if reason and reason != "forced" else describe_status(status))
        with timed(ctx.store, stage.name, stage.unit, ctx.process.is_main) as facts:
            outcome = stage.run(ctx, config)
            facts["units"] = outcome.units
        if outcome.note and announce and ctx.process.is_main:
            ctx.reporter.note(stage.name, outcome.note)
        return outcome


def items_check(ctx: RunContext, key: str) -> list[Check]:
    """The data set ``key`` (``data``, ``eval_data``) lists at least one item."""
    spec = str(getattr(ctx.config, key)) or ctx.component(key).registration.name
    who = "data" if key == "data" else "held-out data"
    return [dataset_check(who, spec, lambda: ctx.build(key) if key == "data" else ctx.component(key).build())]


#: Bytes per output pixel the sample stage writes: a PNG (at most about the raw RGB bytes)
#: plus a latent (a 4-channel float32 value per 8×8 pixels for latent models).
CANDIDATE_BYTES_PER_PIXEL = 3.25


def candidates_bytes(ctx: RunContext) -> int | None:
    """An upper estimate of what the sample stage writes: M × groups × output pixels × bytes per
    pixel; None when the output size is not known before the data stage (no crop)."""
    store, count = ctx.store, ctx.config.sample.num_candidates
    if store.status("data").state == "done":
        table = store.read_table("data", "groups", columns=["lr_height", "lr_width"])
        scale = getattr(ctx.component("backbone").registration.cls, "scale", 4)
        pixels = sum(
            h * w
            for h, w in zip(*(table.column(c).to_pylist() for c in ("lr_height", "lr_width")), strict=True)
        )
        return int(count * pixels * scale * scale * CANDIDATE_BYTES_PER_PIXEL)
    crop = getattr(ctx.component("data").options, "crop", None)
    if not crop:
        return None
    try:
        groups = len(ctx.build("data").items())
    except Dp2oError:  # the data check reports it
        return None
    return int(count * groups * crop * crop * CANDIDATE_BYTES_PER_PIXEL)


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


# -- the trained model's spec ------------------------------------------------------------------
def configured_spec(backbone: Resolved) -> Spec:
    """The backbone spec with the run's non-default options, less its runtime options (a
    device or chunk size belongs to the machine, not to the model)."""
    from dp2o_core.options import options_with_role

    options = backbone.options
    runtime = set(options_with_role(type(options), RUNTIME))
    changed = {
        name: value
        for name, value in options.model_dump(mode="json").items()
        if value != type(options).model_fields[name].default and name not in runtime
    }
    return Spec(backbone.registration.name, changed)


def tuned_spec(ctx: RunContext) -> str:
    """The spec that loads the run's tuned model: the configured backbone with the options
    its :meth:`~dp2o_core.interfaces.Backbone.tuned_options` gives for the trained weights."""
    if ctx.tuned is None:
        completion = ctx.store.completion("train") or {}
        weights = ctx.store.root / completion.get("weights", "train/final")
        spec = configured_spec(ctx.component("backbone"))
        tuned = ctx.build("backbone").tuned_options(Path(weights))
        ctx.tuned = str(Spec(spec.name, {**spec.options, **tuned}))
    return ctx.tuned


__all__ = [
    "DataStage",
    "EvalStage",
    "PairsStage",
    "Pipeline",
    "Reporter",
    "RunContext",
    "RunOptions",
    "SampleStage",
    "ScoreStage",
    "Stage",
    "StageRun",
    "TrainStage",
    "configured_spec",
    "describe_status",
    "tuned_spec",
]
