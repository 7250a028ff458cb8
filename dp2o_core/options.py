"""The base class of every implementation's ``Options``.

Options are what a user sets in a spec string (``--selector ratio=0.25``) or a config
file. They are a pydantic model so that values given as text are converted and checked
in one place, and so that ``dp2o plugins --options`` can list them with types, defaults
and descriptions.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class PluginOptions(BaseModel):
    """Options of one implementation: unknown keys are rejected, every field is described.

    Example::

        from pydantic import Field
        from dp2o_core import PluginOptions

        class Options(PluginOptions):
            ratio: float = Field(0.25, gt=0, le=0.5, description="Share of the group kept as winners.")
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def describe_options(options_cls: type[PluginOptions]) -> list[dict[str, Any]]:
    """One record per option — name, type, default, required, description — for listings."""
    records = []
    for name, field in options_cls.model_fields.items():
        required = field.is_required()
        records.append(
            {
                "name": name,
                "type": _type_name(field.annotation),
                "default": None if required else _jsonable(field.get_default(call_default_factory=True)),
                "required": required,
                "description": field.description or "",
            }
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
