"""The checks and estimates only the pipeline knows, shared by several stages: the data set
lists items, the reward's metrics can score candidates of the run's size, the candidates fit
on the disk.
"""

from __future__ import annotations

from typing import Any

from dp2o_core.errors import Dp2oError
from dp2o_core.pipeline.context import RunContext
from dp2o_core.preflight import Check, dataset_check


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
    """The configured backbone's upscaling factor, from its class and options (nothing is loaded)."""
    resolved = ctx.component("backbone")
    backbone: Any = resolved.registration.cls
    return int(backbone.output_scale(resolved.options))


def lr_sizes(store: Any) -> list[tuple[int, int]]:
    """(height, width) of every LR input of the run's finished data stage."""
    table = store.read_table("data", "groups", columns=["lr_height", "lr_width"])
    return list(zip(table.column("lr_height").to_pylist(), table.column("lr_width").to_pylist(), strict=True))
