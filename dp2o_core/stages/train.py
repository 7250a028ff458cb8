"""The ``train`` stage: weighted Diffusion-DPO on the run's pairs, resumable.

Its fingerprint covers the backbone (less options that change only speed), every train
setting that changes the result, the seed and — through the store — the pairs stage, so
changing the selector or the learning rate retrains while changing the micro-batch size
or the checkpoint interval continues. The stage is ``done`` once the final weights are
saved in ``train/final/``; ``complete.json`` keeps the step count and the last metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from dp2o_core.errors import UsageError
from dp2o_core.options import RUNTIME, options_with_role
from dp2o_core.pipeline.context import RunContext, StageRun
from dp2o_core.pipeline.rounds import starting_weights
from dp2o_core.pipeline.stage import Stage
from dp2o_core.specs import Resolved
from dp2o_core.store import RunStore
from dp2o_core.store.lock import StageLock
from dp2o_core.training.settings import TrainSettings


def train_stage_config(backbone: Resolved, settings: TrainSettings, seed: int) -> dict[str, Any]:
    """What decides the trained weights besides the pairs: the backbone and the train settings,
    less their runtime options (speed, memory, bookkeeping), and the seed."""
    runtime = set(options_with_role(TrainSettings, RUNTIME))
    train = {k: v for k, v in settings.model_dump().items() if k not in runtime}
    return {
        "backbone": backbone.fingerprint_record((RUNTIME,)),
        "train": train,
        "seed": seed,
    }


def run_train_stage(
    store: RunStore,
    backbone: Any,
    settings: TrainSettings,
    config: Mapping[str, Any],
    accelerator: Any,
    *,
    seed: int,
    resume: bool = True,
    on_prepare: tuple[Callable[[int], None], Callable[[int], None]] | None = None,
    on_step: Callable[[Any], None] | None = None,
    on_micro_batch: Callable[[int, int], None] | None = None,
    start_from: Callable[[Any], None] | None = None,
):
    """Train (continuing from the newest checkpoint when ``resume``); returns the TrainResult.

    ``start_from(backbone)``, when given, sets the trained parameters' starting values once
    the reference is set up (a later round that keeps the base model as its reference)."""
    from dp2o_core.training.data import TrainingData
    from dp2o_core.training.trainer import Trainer, tracker_config

    index = accelerator.process_index
    with StageLock(store.root / "locks" / f"train.p{index:03d}.lock", f"stage 'train' of run {store.root}"):
        if accelerator.is_main_process:
            if not resume:
                store.clear("train")
            store.begin("train", config)
        accelerator.wait_for_everyone()
        fingerprint = (store.record("train") or {})["fingerprint"]
        data = TrainingData(
            store, backbone, seed=seed, cache=settings.cache, swap_labels=settings.swap_labels
        )
        start, advance = on_prepare or (None, None)
        data.prepare(_process_info(accelerator), on_start=start, on_progress=advance)
        accelerator.wait_for_everyone()
        trainer = Trainer(
            backbone, data, settings, store.stage_dir("train"), accelerator,
            tracker_config=tracker_config(config, "train"), start_from=start_from,
        )  # fmt: skip
        result = trainer.run(resume=resume, on_step=on_step, on_micro_batch=on_micro_batch)
        if accelerator.is_main_process:
            store.complete(
                "train",
                fingerprint,
                steps=result.steps,
                pairs=len(data),
                resumed_from=result.resumed_from,
                weights=store.relative(result.weights),
                final=asdict(result.final) if result.final else None,
            )
        accelerator.wait_for_everyone()
    return result


def _process_info(accelerator: Any):
    from dp2o_core.store import ProcessInfo

    return ProcessInfo(index=accelerator.process_index, count=accelerator.num_processes)


class TrainStage(Stage):
    """Weighted Diffusion-DPO on the run's pairs, resumable from its checkpoints."""

    name = "train"
    unit = "steps"

    def components(self, ctx: RunContext) -> tuple[str, ...]:
        return (ctx.trained_backbone,)

    def config(self, ctx: RunContext) -> dict[str, Any]:
        return train_stage_config(ctx.component(ctx.base_backbone), ctx.config.train, ctx.seed)

    def forced(self, ctx: RunContext) -> str | None:
        return None if ctx.options.resume else "--restart — training from the start"

    def run(self, ctx: RunContext, config: dict[str, Any]) -> StageRun:
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
