"""The spec of a run's tuned model: the configured backbone with its trained weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
        tuned = ctx.build(ctx.trained_backbone).tuned_options(Path(weights))
        ctx.tuned = str(spec_with(ctx.component(ctx.trained_backbone), tuned))
    return ctx.tuned


def spec_with(backbone: Resolved, tuned: Mapping[str, Any]) -> Spec:
    """The configured backbone spec with ``tuned`` options on top (what loads trained weights),
    less the options that are then back at their defaults."""
    spec = configured_spec(backbone)
    fields = type(backbone.options).model_fields
    merged = {**spec.options, **tuned}
    return Spec(
        spec.name,
        {
            k: v
            for k, v in merged.items()
            if k not in tuned or k not in fields or str(v) != str(fields[k].default)
        },
    )
