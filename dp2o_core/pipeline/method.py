"""The six stages of the method as :class:`~dp2o_core.pipeline.stage.Stage` objects, and the
checks only the pipeline knows (a data set with items, disk for the candidates).

Each stage's work lives in :mod:`dp2o_core.stages` (data, sample, score, pairs, train) or
:mod:`dp2o_core.evaluation`; a stage object says what that work needs and feeds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dp2o_core.errors import Dp2oError, UsageError
from dp2o_core.pipeline.context import RunContext, StageRun
from dp2o_core.pipeline.rounds import starting_weights
from dp2o_core.pipeline.stage import Stage
from dp2o_core.pipeline.tuned import configured_spec, tuned_spec
from dp2o_core.preflight import Check, component_checks, dataset_check, free_disk_check


class DataStage(Stage):
    """List, load and degrade the data set once; store LR (and HR) images."""

    name = "data"
    unit = "images"

    def components(self, ctx: RunContext) -> tuple[str, ...]:
        return () if self.kept(ctx) else ("data", "degradation")

    def kept(self, ctx: RunContext) -> str | None:
        if ctx.round is not None and not ctx.config.rounds.fresh_data:
            return "round 1's data"
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
            ctx.computed["item_signatures"] = item_signatures(ctx.build("data"), data_items(ctx))
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
            ctx.component(ctx.base_backbone),
            ctx.seed,
            settings.num_candidates,
            settings.shared_noise,
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

    def checks(self, ctx: RunContext) -> list[Check]:
        return [*super().checks(ctx), *metric_size_checks(ctx)]

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
        return (ctx.trained_backbone,)

    def config(self, ctx: RunContext) -> dict[str, Any]:
        from dp2o_core.stages.train import train_stage_config

        return train_stage_config(ctx.component(ctx.base_backbone), ctx.config.train, ctx.seed)

    def forced(self, ctx: RunContext) -> str | None:
        return None if ctx.options.resume else "--restart — training from the start"

    def run(self, ctx: RunContext, config: dict[str, Any]) -> StageRun:
        from dp2o_core.stages.train import run_train_stage

        if ctx.accelerator is None:
            raise UsageError("the train stage needs an accelerator in its RunContext (make_accelerator)")
        settings = ctx.config.train
        for warning in training_warnings(settings, pairs=ctx.store.status("pairs").rows.get("pairs")):
            ctx.reporter.note(self.name, warning)
        bars = [("conditions", "groups"), ("train", "steps")]
        with ctx.reporter.progress(bars) as [prepare_callbacks, (start, advance)]:
            start(settings.max_steps)
            shown = [0.0]  # steps shown, fractions of a step included

            def on_micro_batch(done: int, count: int) -> None:
                if done < count:  # the step's last micro-batch is shown with its metrics
                    advance(1 / count)
                    shown[0] += 1 / count

            def on_step(metrics: Any) -> None:
                advance(
                    metrics.step - shown[0],
                    note=f"loss {metrics.loss:.4f}  acc {metrics.implicit_accuracy:.2f}  "
                    f"margin {metrics.reward_margin:+.3f}",
                )
                shown[0] = float(metrics.step)

            result = run_train_stage(
                ctx.store,
                ctx.build(ctx.trained_backbone),
                settings,
                config,
                ctx.accelerator,
                seed=ctx.seed,
                resume=ctx.options.resume,
                on_prepare=prepare_callbacks,
                on_step=on_step,
                on_micro_batch=on_micro_batch,
                start_from=starting_weights(ctx),
            )
        return StageRun(units=result.steps - (result.resumed_from or 0), result=result)


def training_warnings(settings: Any, pairs: int | None) -> list[str]:
    """What is worth saying before training starts: a batch larger than the run's pairs (every
    pair repeated within each step, at that many times the cost) and a warm-up longer than the
    run (the learning rate never reaches its value)."""
    warnings = []
    if pairs and settings.batch_size > pairs:
        warnings.append(
            f"warning: a step of {settings.batch_size} pairs (--batch-size) exceeds the run's {pairs} pairs: "
            f"each step uses every pair about {settings.batch_size / pairs:.0f} times, at that many times "
            f"the cost. Pass --batch-size {pairs} (or fewer), or make more pairs (more inputs, a larger -m)"
        )
    if settings.warmup_steps > settings.max_steps:
        reached = settings.learning_rate * settings.max_steps / settings.warmup_steps
        warnings.append(
            f"warning: the warm-up of {settings.warmup_steps} steps is longer than the run's "
            f"{settings.max_steps}: the learning rate ends at {reached:.2g}, never reaching "
            f"{settings.learning_rate:g}. Pass --warmup-steps {max(1, settings.max_steps // 10)} (or 0)"
        )
    return warnings


class EvalStage(Stage):
    """The base and the tuned model on held-out data (``eval_data``), on the same seeds."""

    name = "eval"
    unit = "samples"
    main_only = True

    def components(self, ctx: RunContext) -> tuple[str, ...]:
        return ("eval_data", "degradation", "reward", ctx.base_backbone)

    def config(self, ctx: RunContext) -> dict[str, Any]:
        from dp2o_core.evaluation import eval_stage_config
        from dp2o_core.stages.sample import NOT_SAMPLING

        records = {
            "eval_data": ctx.component("eval_data").as_record(),
            "degradation": ctx.component("degradation").as_record(),
            "reward": ctx.component("reward").as_record(),
            "base": ctx.component(ctx.base_backbone).fingerprint_record(NOT_SAMPLING),
        }
        # the run's base seed in every round: each round is evaluated on the same inputs and seeds
        return eval_stage_config(records, self._settings(ctx), ctx.config.seed)

    def checks(self, ctx: RunContext) -> list[Check]:
        return [*super().checks(ctx), *items_check(ctx, "eval_data")]

    @staticmethod
    def _settings(ctx: RunContext) -> dict[str, Any]:
        num_samples = ctx.config.eval.num_samples or ctx.config.sample.num_candidates
        return {**ctx.config.eval.model_dump(), "num_samples": num_samples}

    def run(self, ctx: RunContext, config: dict[str, Any]) -> StageRun:
        from dp2o_core.evaluation import (
            EvalModel,
            build_scorers,
            evaluate,
            load_inputs,
            progress_unit,
            write_evaluation,
        )
        from dp2o_core.specs import parse_spec, resolve_spec

        settings = self._settings(ctx)
        tuned = tuned_spec(ctx)
        for key in {"backbone", ctx.trained_backbone}:
            ctx.release(key)  # the base and the tuned model load fresh
        fingerprint = ctx.store.begin(self.name, config)
        reward = ctx.build("reward")
        scorers, unavailable = build_scorers(
            ctx.manager, ctx.config.eval.metrics, exclude=[i.name for i in reward.metrics()]
        )
        dataset = ctx.component("eval_data").build()
        degradation = ctx.build("degradation") if dataset.synthesises_lr else None
        inputs = load_inputs(dataset, degradation, ctx.config.seed)
        base = ctx.component(ctx.base_backbone)
        models = [
            EvalModel("base", str(configured_spec(base)), base.build()),
            EvalModel(
                "tuned",
                tuned,
                resolve_spec(ctx.manager, "backbone", parse_spec(tuned, "backbone"), None).build(),
            ),
        ]
        runs = len(inputs) * len(models) * settings["seeds"]
        unit = progress_unit(len(models), settings["seeds"])
        with ctx.reporter.progress([(self.name, unit)]) as [(start, advance)]:
            start(runs)
            evaluation = evaluate(
                models,
                inputs,
                scorers,
                reward,
                num_samples=settings["num_samples"],
                seeds=settings["seeds"],
                seed=ctx.config.seed,
                on_progress=advance,
            )
        evaluation.unavailable = {**unavailable, **evaluation.unavailable}
        write_evaluation(ctx.store, evaluation, inputs, fingerprint)
        return StageRun(units=runs * settings["num_samples"], result=evaluation)


def data_items(ctx: RunContext) -> list[Any]:
    """The data set's items, listed once per run (the fingerprint, the checks and the disk
    estimate all need them; a folder of 30,000 images takes a while to list)."""
    if "data_items" not in ctx.computed:
        ctx.computed["data_items"] = ctx.build("data").items()
    return ctx.computed["data_items"]


def items_check(ctx: RunContext, key: str) -> list[Check]:
    """The data set ``key`` (``data``, ``eval_data``) lists at least one item."""
    spec = str(getattr(ctx.config, key)) or ctx.component(key).registration.name
    if key == "data":
        return [dataset_check("data", spec, lambda: data_items(ctx))]
    return [dataset_check("held-out data", spec, lambda: ctx.component(key).build().items())]


def candidate_side(ctx: RunContext) -> tuple[int, str] | None:
    """The shortest side of the run's candidates (pixels) and where it comes from, before they
    exist: the smallest LR side of a finished data stage × the backbone's scale, else the data
    set's HR ``crop``; None when unknown before the data stage (no crop)."""
    store, scale = ctx.store, backbone_scale(ctx)
    if store.status("data").state == "done":
        sides = [min(h, w) for h, w in lr_sizes(store)]
        return (min(sides) * scale, "the run's data") if sides else None
    crop = getattr(ctx.component("data").options, "crop", None)
    return (int(crop), f"crop={crop}") if crop else None


def metric_size_checks(ctx: RunContext) -> list[Check]:
    """Each metric of the reward can score candidates of the run's size: NIQE needs 96 px, so a
    64-px crop fails here in a second instead of at the score stage after sampling."""
    side = candidate_side(ctx)
    if side is None:
        return []
    size, source = side
    checks = []
    for info in ctx.build("reward").metrics():
        if size < info.min_size:
            checks.append(
                Check(
                    "reward",
                    f"metric {info.name} on {size}-px candidates",
                    "missing",
                    problem=f"{info.name} needs images of at least {info.min_size} px; "
                    f"the candidates are {size} px ({source})",
                    fix=f"use HR crops of at least {info.min_size} px, or a reward without {info.name}",
                )
            )
    return checks


#: Bytes per output pixel the sample stage writes: a PNG (at most about the raw RGB bytes)
#: plus a latent (a 4-channel float32 value per 8×8 pixels for latent models).
CANDIDATE_BYTES_PER_PIXEL = 3.25


def candidates_bytes(ctx: RunContext) -> int | None:
    """An upper estimate of what the sample stage writes: M × groups × output pixels × bytes per
    pixel; None when the output size is not known before the data stage (no crop)."""
    store, count = ctx.store, ctx.config.sample.num_candidates
    if store.status("data").state == "done":
        scale = backbone_scale(ctx)
        pixels = sum(h * w for h, w in lr_sizes(store))
        return int(count * pixels * scale * scale * CANDIDATE_BYTES_PER_PIXEL)
    crop = getattr(ctx.component("data").options, "crop", None)
    if not crop:
        return None
    try:
        groups = len(data_items(ctx))
    except Dp2oError:  # the data check reports it
        return None
    return int(count * groups * crop * crop * CANDIDATE_BYTES_PER_PIXEL)


def backbone_scale(ctx: RunContext) -> int:
    """The configured backbone's upscaling factor, from its class (nothing is loaded)."""
    return int(getattr(ctx.component("backbone").registration.cls, "scale", 4))


def lr_sizes(store: Any) -> list[tuple[int, int]]:
    """(height, width) of every LR input of the run's finished data stage."""
    table = store.read_table("data", "groups", columns=["lr_height", "lr_width"])
    return list(zip(table.column("lr_height").to_pylist(), table.column("lr_width").to_pylist(), strict=True))
