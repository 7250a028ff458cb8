"""Supervised pretraining of an SR generator: the trainer with the backbone's own denoising loss.

Each example is an HR crop, its LR and a timestep and noise (:mod:`dp2o_core.training.pretrain_data`);
its loss is the backbone's regression error at that timestep — ε, v or flow velocity, whatever
:meth:`~dp2o_core.interfaces.backbone.Backbone.noisy` makes the target — and a step's loss is the
mean over its examples. No reference model is involved. Everything else is the DPO trainer's:
accelerate, micro-batches, clipping, checkpoints and exact resume. Beyond it:

* the learning rate warms up linearly, then stays or follows a cosine to ``min_learning_rate``;
* an exponential moving average of the trained weights (decay ``min(ema, (1 + k)/(10 + k))``
  after step k) is kept in float32, checkpointed (``ema.safetensors``) and is what is saved —
  the checkpoints' ``weights/`` and ``final/`` hold the averaged model;
* every ``validate_every`` steps (and before the first) a callback validates the averaged model.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dp2o_core.training.objective import per_sample_error
from dp2o_core.training.pretrain_data import PretrainData
from dp2o_core.training.settings import PretrainSettings
from dp2o_core.training.trainer import Trainer


@dataclass
class PretrainStepMetrics:
    """What one pretraining step reports."""

    step: int
    loss: float  #: mean regression error over the step's examples
    grad_norm: float
    learning_rate: float
    examples: int


class Pretrainer(Trainer):
    """The backbone's denoising objective on online-degraded crops; ``run()`` trains and saves."""

    objective_name = "denoising"
    divergence_advice = (
        "Lower the learning rate, or use mixed_precision=no, then run the same command again: it "
        "resumes from the last checkpoint."
    )
    metrics_type = PretrainStepMetrics
    settings: PretrainSettings  # type: ignore[assignment]
    data: PretrainData  # type: ignore[assignment]

    def __init__(self, *args: Any, validate: Callable[[int, Any], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: ``validate(step, backbone)``, called on process 0 with the averaged weights in place
        self.validate = validate
        self._parameters: list[torch.nn.Parameter] = []
        self._ema: list[torch.Tensor] = []

    # -- the objective -------------------------------------------------------------------------
    def _prepare_backbone(self) -> None:
        """Trainable, without a reference; the average starts at the starting weights."""
        self.backbone.prepare_pretraining()
        self._parameters = list(self.backbone.trainable_parameters())
        if self.settings.ema > 0:
            self._ema = [p.detach().float().clone() for p in self._parameters]

    def _micro_batch(self, positions: Sequence[int], policy) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.data.batch(positions, self.accelerator.device)
        x_t, target = self.backbone.noisy(batch.x0, batch.noise, batch.timesteps)
        predict = policy if policy is not None else self.backbone.predict
        errors = per_sample_error(predict(x_t, batch.timesteps, batch.condition), target)
        loss = errors.sum()
        count = torch.tensor(float(len(positions)), device=loss.device)
        return loss, torch.stack([loss.detach().float(), count])

    def _metrics(self, step: int, totals: torch.Tensor, grad_norm: float, learning_rate: float):
        count = float(totals[-1])
        return PretrainStepMetrics(
            step=step,
            loss=float(totals[0]) / count,
            grad_norm=grad_norm,
            learning_rate=learning_rate,
            examples=int(count),
        )

    def _learning_rate_factor(self, step: int) -> float:
        """Linear warm-up, then constant or a cosine from 1 to ``min_learning_rate``."""
        s = self.settings
        if step < s.warmup_steps:
            return (step + 1) / s.warmup_steps
        if s.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - s.warmup_steps) / max(1, s.max_steps - s.warmup_steps))
        return s.min_learning_rate + (1 - s.min_learning_rate) * 0.5 * (1 + math.cos(math.pi * progress))

    # -- the average and validation ------------------------------------------------------------
    def _after_optimizer_step(self, step: int) -> None:
        if self._ema:
            decay = min(self.settings.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                for kept, current in zip(self._ema, self._parameters, strict=True):
                    kept.lerp_(current.detach().float(), 1 - decay)
        done = step + 1
        if self.validate is not None and (
            done % self.settings.validate_every == 0 or done == self.settings.max_steps
        ):
            self.validate_now(done)

    def validate_now(self, step: int) -> None:
        """Run the validation callback on process 0 with the averaged weights; the others wait."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process and self.validate is not None:
            with self.averaged_weights():
                self.validate(step, self.backbone)
        acc.wait_for_everyone()

    @contextlib.contextmanager
    def averaged_weights(self):
        """The averaged weights in the trained parameters for the duration (nothing without EMA)."""
        if not self._ema:
            yield
            return
        saved = [p.detach().clone() for p in self._parameters]
        with torch.no_grad():
            for parameter, kept in zip(self._parameters, self._ema, strict=True):
                parameter.copy_(kept.to(parameter.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for parameter, value in zip(self._parameters, saved, strict=True):
                    parameter.copy_(value)

    def _save_weights_to(self, directory: Path) -> None:
        with self.averaged_weights():
            self.backbone.save(directory)

    def _save_extra_state(self, folder: Path) -> None:
        if self._ema:
            from safetensors.torch import save_file

            save_file(
                {str(i): t.contiguous() for i, t in enumerate(self._ema)}, str(folder / "ema.safetensors")
            )

    def _load_extra_state(self, folder: Path) -> None:
        if self._ema:
            from safetensors.torch import load_file

            stored = load_file(str(folder / "ema.safetensors"))
            self._ema = [stored[str(i)].to(t.device) for i, t in enumerate(self._ema)]
