"""The training target of a diffusers noise scheduler's ``prediction_type``."""

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
