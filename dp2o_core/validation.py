"""Checks that a class is a well-formed implementation of its kind.

Used when a plugin registers a class (a malformed one fails that plugin, with the reason)
and by ``dp2o_core.testing.check_implementation`` in plugin authors' test suites.
"""

from __future__ import annotations

import inspect
import re

from dp2o_core.interfaces import INTERFACES, Backbone
from dp2o_core.options import ROLES, PluginOptions, option_role

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def implementation_problems(
    cls: object, kind: str, aliases: tuple[str, ...] = (), strict: bool = False
) -> list[str]:
    """Every way ``cls`` breaks the contract of ``kind``; empty when it is fine.

    ``strict`` adds what a plugin's own test suite should hold it to but loading should not
    refuse (a backbone keeping the default ``prepare_training``).
    """
    interface = INTERFACES[kind]
    if not (isinstance(cls, type) and issubclass(cls, interface)):
        return [f"{cls!r} is not a subclass of {interface.__name__}"]
    label = cls.__qualname__
    problems = []
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.append(f"{label}.name {name!r} is not kebab-case (e.g. 'my-selector')")
    for alias in aliases:
        if not isinstance(alias, str) or not NAME_PATTERN.match(alias):
            problems.append(f"alias {alias!r} of {label} is not kebab-case")
    if not (cls.__doc__ or "").strip() or cls.__doc__ is interface.__doc__:
        problems.append(f"{label} has no docstring (its first line is what `dp2o plugins` shows)")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        problems.append(f"{label} does not implement {missing}")
    if kind == "backbone":
        problems += _backbone_problems(cls, label, strict)
    options = getattr(cls, "Options", None)
    if not (isinstance(options, type) and issubclass(options, PluginOptions)):
        problems.append(f"{label}.Options is not a subclass of dp2o_core.PluginOptions")
        return problems
    undescribed = [n for n, f in options.model_fields.items() if not (f.description or "").strip()]
    if undescribed:
        problems.append(f"{label}.Options fields without a description: {', '.join(undescribed)}")
    for option in options.model_fields:
        role = option_role(options, option)
        if role is not None and role not in ROLES:
            problems.append(f"{label}.Options.{option} has role {role!r}; roles are {', '.join(ROLES)}")
    if not any(f.is_required() for f in options.model_fields.values()):
        try:
            options()
        except Exception as error:  # noqa: BLE001 - any failure is the finding
            problems.append(f"{label}.Options() fails with its defaults: {error}")
    return problems


def _backbone_problems(cls: type, label: str, strict: bool) -> list[str]:
    """The backbone contract's class-level checks (docs/backbones.md, "The backbone contract")."""
    problems = []
    scale = getattr(cls, "scale", None)
    if not (isinstance(scale, int) and not isinstance(scale, bool) and scale >= 1):
        problems.append(f"{label}.scale must be a positive int (the LR → output factor), not {scale!r}")
    if not isinstance(getattr(cls, "stochastic", None), bool):
        problems.append(f"{label}.stochastic must be True or False")
    if strict and getattr(cls, "prepare_training", None) is Backbone.prepare_training:
        problems.append(
            f"{label} keeps the default prepare_training(), which does nothing: without a frozen "
            "reference set up there, predict(reference=True) is the policy itself and the DPO loss is 0"
        )
    return problems
