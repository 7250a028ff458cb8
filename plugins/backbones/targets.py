"""Training on a diffusers noise scheduler: its target for its ``prediction_type``, and
timesteps drawn uniformly over its training steps."""

from __future__ import annotations

from typing import Any

from dp2o_core.errors import Dp2oError


def noisy_and_target(scheduler: Any, x0: Any, noise: Any, timesteps: Any, source: str) -> tuple[Any, Any]:
    """x_t = the scheduler's ``add_noise`` and what the model predicts at it: the noise (ε), the
    velocity (v) or x₀, as the scheduler's config says (``source`` names the model in an error)."""
    x_t = scheduler.add_noise(x0, noise, timesteps)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return x_t, noise
    if kind == "v_prediction":
        return x_t, scheduler.get_velocity(x0, noise, timesteps)
    if kind == "sample":
        return x_t, x0
    raise Dp2oError(f"unsupported prediction_type {kind!r} in the scheduler config of {source}")


class SchedulerTraining:
    """Mixin for a backbone trained on ``self.scheduler``'s forward process: timesteps uniform
    over its training steps, x_t and the target from :func:`noisy_and_target`."""

    scheduler: Any
    options: Any
    device: Any

    def sample_timesteps(self, n: int, generator=None):
        """Uniform over the training steps of the model's schedule."""
        import torch

        top = self.scheduler.config.num_train_timesteps
        return torch.randint(0, top, (n,), generator=generator).to(self.device)

    def noisy(self, x0, noise, timesteps):
        """x_t and the target the model predicts (its scheduler's prediction_type)."""
        return noisy_and_target(self.scheduler, x0, noise, timesteps, self.options.model)
