"""The spec of a run's tuned model: the configured backbone with its trained weights."""

from __future__ import annotations

from pathlib import Path

from dp2o_core.options import RUNTIME
from dp2o_core.pipeline.context import RunContext
from dp2o_core.specs import Resolved, Spec


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
        # absolute: the printed command works from any folder
        weights = (ctx.store.root / completion.get("weights", "train/final")).absolute()
        spec = configured_spec(ctx.component(ctx.trained_backbone))
        tuned = ctx.build(ctx.trained_backbone).tuned_options(Path(weights))
        ctx.tuned = str(Spec(spec.name, {**spec.options, **tuned}))
    return ctx.tuned
