"""The base class of every implementation's ``Options``.

Options are what a user sets in a spec string (``--selector ratio=0.25``) or a config
file. They are a pydantic model so that values given as text are converted and checked
in one place, and so that ``dp2o plugins --options`` can list them with types, defaults
and descriptions.

An option may declare what it does *not* change, so that the run store's fingerprints leave
it out and changing it redoes no finished work:

* :func:`runtime_option` — speed, memory or the machine only (a device, a batch or chunk size,
  gradient checkpointing): the samples, scores and trained weights are the same either way;
* :func:`training_option` — what training updates and how (the trainable part, a LoRA rank,
  the training timestep distribution): the candidates a frozen model samples do not depend
  on it, the trained weights do.

Both are ordinary pydantic fields carrying the role in ``json_schema_extra`` under the key
``"dp2o"``; the core reads that marker and never a list of option names.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Role of an option that changes speed, memory or the machine, never a result.
RUNTIME = "runtime"
#: Role of an option that only training reads (what is trained, how timesteps are drawn).
TRAINING = "training"
ROLES = (RUNTIME, TRAINING)


class PluginOptions(BaseModel):
    """Options of one implementation: unknown keys are rejected, every field is described.

    Example::

        from pydantic import Field
        from dp2o_core import PluginOptions

        class Options(PluginOptions):
            ratio: float = Field(0.25, gt=0, le=0.5, description="Share of the group kept as winners.")
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    #: Groups of options that are two ways of saying one thing (the ratio selector's
    #: ``ratio`` and ``n``). When specs are layered (command line over config file over
    #: the embedded default), a layer that gives one option of a group drops the others
    #: that earlier layers gave; one spec giving two of them is still an error.
    alternatives: ClassVar[tuple[tuple[str, ...], ...]] = ()


class TiledSamplingOptions(PluginOptions):
    """``tile`` and ``overlap``: what a backbone that denoises large images in overlapping tiles
    (:mod:`dp2o_core.tiling`) takes. A subclass sets its own default ``tile`` — the size its
    model was trained at. Both are in output pixels; both change the images of outputs larger
    than one tile, so they are part of the sample stage's fingerprint."""

    tile: int = Field(
        512,
        ge=0,
        description="Side of the square output tiles an image larger than one is denoised in (output "
        "pixels; 0: never tile). An image that fits one tile is denoised whole, as without tiling.",
    )
    overlap: int = Field(
        64, ge=0, description="Output pixels neighbouring tiles share (their outputs are blended there)."
    )

    @model_validator(mode="after")
    def _overlap_within_tile(self) -> TiledSamplingOptions:
        if self.tile and self.overlap * 2 > self.tile:
            raise ValueError(
                f"overlap={self.overlap} is more than half of tile={self.tile}: give a smaller overlap "
                f"(at most {self.tile // 2}) or a larger tile"
            )
        return self


def runtime_option(default: Any, **field_arguments: Any) -> Any:
    """A field that changes only speed, memory or the machine (see the module docstring)."""
    return Field(default, json_schema_extra={"dp2o": RUNTIME}, **field_arguments)


def training_option(default: Any, **field_arguments: Any) -> Any:
    """A field that only training reads (see the module docstring)."""
    return Field(default, json_schema_extra={"dp2o": TRAINING}, **field_arguments)


def option_role(options_cls: type[BaseModel], name: str) -> str | None:
    """The declared role of option ``name`` (:data:`RUNTIME`, :data:`TRAINING`) or None."""
    field = options_cls.model_fields.get(name)
    extra = field.json_schema_extra if field is not None else None
    return extra.get("dp2o") if isinstance(extra, dict) else None  # type: ignore[return-value]


def options_with_role(options_cls: type[BaseModel], *roles: str) -> list[str]:
    """The names of the options declared with one of ``roles``."""
    return [name for name in options_cls.model_fields if option_role(options_cls, name) in roles]


def describe_options(options_cls: type[PluginOptions]) -> list[dict[str, Any]]:
    """One record per option — name, type, default, required, description, and ``role`` for an
    option declared with one — for listings."""
    records = []
    for name, field in options_cls.model_fields.items():
        required = field.is_required()
        role = option_role(options_cls, name)
        records.append(
            {
                "name": name,
                "type": _type_name(field.annotation),
                "default": None if required else _jsonable(field.get_default(call_default_factory=True)),
                "required": required,
                "description": field.description or "",
            }
            | ({"role": role} if role else {})
        )
    return records


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
