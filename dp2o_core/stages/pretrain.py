"""The ``pretrain`` stage: build the SR generator that DPO later tunes (``dp2o pretrain``).

It trains the backbone's trainable part with its own denoising objective on random HR crops of
the run's data set whose LR the run's degradation makes afresh every step
(:mod:`dp2o_core.training.pretrain_data`, :mod:`dp2o_core.training.pretrainer`). It is not part
of the DPO method's pipeline: a run made by ``dp2o pretrain`` holds this stage only, and its
result, ``pretrain/final/``, is a model in the backbone's own format that ``dp2o train``,
``dp2o upscale`` and ``dp2o eval`` take through the backbone's options (e.g.
``sd2:controlnet=RUN/pretrain/final``).

Its fingerprint covers the backbone (less runtime options), the data set and its item ids, the
degradation, every pretrain setting that changes the weights, and the seed; a change of any of
them starts over, and the guard refuses that while checkpoints exist unless ``--redo`` is given.
With ``--eval-data`` the averaged model is validated every ``validate_every`` steps
(``pretrain/validation.jsonl`` and an image grid per validation in ``pretrain/validation/``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dp2o_core.errors import UsageError
from dp2o_core.options import RUNTIME, options_with_role
from dp2o_core.pipeline.checks import data_items, items_check
from dp2o_core.pipeline.context import RunContext, StageRun
from dp2o_core.pipeline.stage import Stage
from dp2o_core.preflight import Check
from dp2o_core.store.fingerprint import fingerprint
from dp2o_core.store.lock import StageLock
from dp2o_core.training.checkpoints import read_json_lines, steps_progress
from dp2o_core.training.settings import PretrainSettings

VALIDATION_FILE = "validation.jsonl"


def read_validation(directory: Path) -> list[dict[str, Any]]:
    """The validation records of a pretrain stage folder, one per step (the last written wins:
    a resumed run validates a step again with the same result), in step order."""
    records = {int(r["step"]): r for r in read_json_lines(Path(directory) / VALIDATION_FILE) if "step" in r}
    return [records[step] for step in sorted(records)]


class PretrainStage(Stage):
    """Supervised pretraining of the backbone on online-degraded HR crops, resumable."""

    name = "pretrain"
    unit = "steps"

    def components(self, ctx: RunContext) -> tuple[str, ...]:
        held_out = ("eval_data",) if ctx.config.eval_data.name is not None else ()
        return ("backbone", "data", "degradation", *held_out)

    def config(self, ctx: RunContext) -> dict[str, Any]:
        runtime = set(options_with_role(PretrainSettings, RUNTIME))
        settings = {k: v for k, v in ctx.config.pretrain.model_dump().items() if k not in runtime}
        return {
            "backbone": ctx.component("backbone").fingerprint_record((RUNTIME,)),
            "data": ctx.component("data").as_record(),
            "items": fingerprint(sorted(item.id for item in data_items(ctx))),
            "degradation": ctx.component("degradation").as_record(),
            "pretrain": settings,
            "seed": ctx.seed,
        }

    def forced(self, ctx: RunContext) -> str | None:
        return None if ctx.options.resume else "--restart — pretraining from the start"

    def finished_work(self, store: Any) -> tuple[int, str]:
        """The steps its final weights or newest checkpoint hold."""
        return steps_progress(store, self.name)[0], "trained step(s)"

    def checks(self, ctx: RunContext) -> list[Check]:
        checks = [*super().checks(ctx), *items_check(ctx, "data")]
        if ctx.config.eval_data.name is not None:
            checks += items_check(ctx, "eval_data")
        if all(check.ok for check in checks):
            checks += self._data_checks(ctx)
        return checks

    def _data_checks(self, ctx: RunContext) -> list[Check]:
        """HR images exist and are large enough for the crop; the degradation keeps the scale.
        Headers and one tiny degradation only: nothing is loaded."""
        from dp2o_core.training.pretrain_data import hr_image_problems, hr_items

        crop = ctx.config.pretrain.crop
        scale = _backbone_scale(ctx)
        problems: list[Check] = []
        if crop % scale:
            problems.append(
                Check(
                    "pretrain",
                    f"crop {crop}",
                    "missing",
                    problem=f"the crop must be a multiple of the backbone's scale ×{scale}",
                    fix=f"pass --crop {crop - crop % scale or scale}",
                )
            )
        try:
            items = hr_items(ctx.build("data"))
        except UsageError as error:
            return [*problems, Check("data", "HR images", "missing", problem=str(error))]
        bad = hr_image_problems(items, crop)
        if bad:
            shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
            problems.append(
                Check(
                    "data",
                    f"HR images of at least {crop}×{crop} pixels",
                    "missing",
                    problem=f"{len(bad)} of {len(items)} cannot be cropped: {shown}",
                    fix="remove or replace those images, or pass a smaller --crop",
                )
            )
        problems += _degradation_check(ctx, crop, scale)
        return problems

    def run(self, ctx: RunContext, config: dict[str, Any]) -> StageRun:
        if ctx.accelerator is None:
            raise UsageError("the pretrain stage needs an accelerator in its RunContext (make_accelerator)")
        from dp2o_core.training.pretrain_data import PretrainData, hr_items
        from dp2o_core.training.pretrainer import Pretrainer
        from dp2o_core.training.trainer import tracker_config

        store, accelerator, settings = ctx.store, ctx.accelerator, ctx.config.pretrain
        index = accelerator.process_index
        lock = store.root / "locks" / f"pretrain.p{index:03d}.lock"
        with StageLock(lock, f"stage 'pretrain' of run {store.root}"):
            if accelerator.is_main_process:
                if not ctx.options.resume:
                    store.clear("pretrain")
                store.begin("pretrain", config)
            accelerator.wait_for_everyone()
            fingerprint_ = (store.record("pretrain") or {})["fingerprint"]
            backbone = ctx.build("backbone")
            data = PretrainData(
                hr_items(ctx.build("data")),
                backbone,
                ctx.build("degradation"),
                seed=ctx.seed,
                crop=settings.crop,
                null_prompt_ratio=settings.null_prompt_ratio,
            )
            directory = store.stage_dir("pretrain")
            validation = _Validation(ctx, directory) if ctx.config.eval_data.name is not None else None
            trainer = Pretrainer(
                backbone, data, settings, directory, accelerator,
                tracker_config=tracker_config(config, "pretrain"), validate=validation,
            )  # fmt: skip
            if validation is not None and not read_validation(directory):
                trainer.validate_now(0)  # the starting model, the curves' first point
            data.prepare()  # prompt embeddings ahead (after validation's), text encoders freed if few
            with ctx.reporter.progress([("pretrain", "steps")]) as [(start, advance)]:
                start(settings.max_steps)
                shown = [0]

                def on_step(metrics: Any) -> None:
                    advance(
                        metrics.step - shown[0],
                        note=f"loss {metrics.loss:.4f}  lr {metrics.learning_rate:.2e}",
                    )
                    shown[0] = metrics.step

                result = trainer.run(resume=ctx.options.resume, on_step=on_step)
            if accelerator.is_main_process:
                store.complete(
                    "pretrain",
                    fingerprint_,
                    steps=result.steps,
                    resumed_from=result.resumed_from,
                    weights=store.relative(result.weights),
                    tuned_options=dict(backbone.tuned_options(result.weights)),
                    final=vars(result.final) if result.final else None,
                )
            accelerator.wait_for_everyone()
        return StageRun(units=result.steps - (result.resumed_from or 0), result=result)


class _Validation:
    """Validates the averaged model on the first held-out inputs: each metric's mean against
    the HR for the model and for bicubic upsampling, one JSON line per validation, and a grid
    (LR upsampled | sample | HR per input) as ``validation/step-NNNNNN.png``."""

    def __init__(self, ctx: RunContext, directory: Path) -> None:
        self.ctx = ctx
        self.directory = directory
        self._ready: tuple[list[Any], list[Any]] | None = None

    def _prepare(self) -> tuple[list[Any], list[Any]]:
        if self._ready is None:
            from dp2o_core.evaluation import build_scorers, load_inputs

            ctx, settings = self.ctx, self.ctx.config.pretrain
            dataset = ctx.component("eval_data").build()
            degradation = ctx.build("degradation") if dataset.synthesises_lr else None
            inputs = load_inputs(dataset, degradation, ctx.config.seed, ctx.build("prompter"))
            inputs = inputs[: settings.validation_inputs]
            if any(item.hr is None for item in inputs):
                raise UsageError("pretraining validates against HR images; --eval-data has inputs without HR")
            scorers, unavailable = build_scorers(ctx.manager, settings.validation_metrics)
            for name, reason in unavailable.items():
                ctx.reporter.note("pretrain", f"validation metric {name} is unavailable: {reason}")
            self._ready = (inputs, scorers)
        return self._ready

    def __call__(self, step: int, backbone: Any) -> None:
        from dp2o_core.atomic import write_text_atomic
        from dp2o_core.evaluation import BicubicBaseline, evaluate

        inputs, scorers = self._prepare()
        evaluation = evaluate(
            [("bicubic", "bicubic", BicubicBaseline(backbone.scale)), ("model", "model", backbone)],
            inputs,
            scorers,
            None,
            num_samples=1,
            seed=self.ctx.config.seed,
        )
        record: dict[str, Any] = {
            "step": step,
            **{
                model.label: {name: stat.mean for name, stat in model.metrics.items()}
                for model in evaluation.models
            },
        }
        path = self.directory / VALIDATION_FILE
        previous = path.read_text(encoding="utf-8") if path.exists() else ""
        write_text_atomic(path, previous + json.dumps(record) + "\n")
        _write_grid(self.directory / "validation" / f"step-{step:06d}.png", evaluation, inputs)
        metrics = "  ".join(f"{name} {value:.4g}" for name, value in record["model"].items())
        self.ctx.reporter.note("pretrain", f"validation at step {step}: {metrics}")


def _write_grid(path: Path, evaluation: Any, inputs: list[Any]) -> None:
    """One row per input: bicubic upsampling, the model's sample, the HR."""
    import torch

    from dp2o_core.imageio import tensor_to_array, write_png

    rows = []
    for item in inputs:
        images = [evaluation.models[0].examples[item.id], evaluation.models[1].examples[item.id], item.hr[0]]
        height = min(image.shape[-2] for image in images)
        width = min(image.shape[-1] for image in images)
        rows.append(torch.cat([image[..., :height, :width].float() for image in images], dim=-1))
    width = min(row.shape[-1] for row in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, tensor_to_array(torch.cat([row[..., :width] for row in rows], dim=-2)))


def _backbone_scale(ctx: RunContext) -> int:
    """The backbone's upscaling factor, from its class (nothing loaded)."""
    return int(getattr(ctx.component("backbone").registration.cls, "scale", 4))


def _degradation_check(ctx: RunContext, crop: int, scale: int) -> list[Check]:
    """The degradation makes crop / scale LR images of a crop (one gray crop, degraded once)."""
    import torch

    expected = crop // scale
    try:
        lr = ctx.build("degradation").degrade(torch.full((1, 3, crop, crop), 0.5), [0], scale)
    except Exception as error:  # noqa: BLE001 - reported with the degradation's name
        return [Check("degradation", "degrading a crop", "missing", problem=f"failed: {error}")]
    if tuple(lr.shape[-2:]) != (expected, expected):
        name = ctx.component("degradation").registration.name
        return [
            Check(
                f"degradation {name}",
                f"×{scale} LR of a {crop}-pixel crop",
                "missing",
                problem=f"it makes {lr.shape[-1]}×{lr.shape[-2]} images, not {expected}×{expected}: its "
                f"scale differs from the backbone's ×{scale}",
                fix="use a degradation of the backbone's scale (or a backbone of the degradation's)",
            )
        ]
    return []
