"""The eval stage: the base and the tuned model on held-out data, on the same seeds.

The evaluation itself (sampling, metrics, statistics, the stored tables) lives in
:mod:`dp2o_core.evaluation`, which ``dp2o eval`` uses too; this stage feeds it the run's
models, data and reward.
"""

from __future__ import annotations

from typing import Any

from dp2o_core.pipeline.checks import items_check
from dp2o_core.pipeline.context import RunContext, StageRun
from dp2o_core.pipeline.stage import Stage
from dp2o_core.pipeline.tuned import configured_spec, tuned_spec
from dp2o_core.preflight import Check


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
        inputs = load_inputs(dataset, degradation, ctx.config.seed, ctx.build("prompter"))
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
