"""Spec strings: how users choose an implementation and its options in one word.

Grammar (docs/configuration.md)::

    NAME                      an implementation with its default options   --backbone flux
    NAME:KEY=VALUE,KEY=VALUE  an implementation with options               --reward hybrid:balance=0.7
    KEY=VALUE,...             options of the default/configured one       --selector ratio=0.25

A VALUE is text that the implementation's ``Options`` converts (``0.25``, ``true``); a
list is written in brackets (``fr=[lpips, topiq_fr]``); quotes keep commas, brackets and
colons inside a value (``prompt="a cat, sharp"``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from dp2o_core.errors import UnknownNameError, UsageError
from dp2o_core.options import PluginOptions, describe_options, options_with_role

if TYPE_CHECKING:
    from dp2o_core.registry import PluginManager, Registration


@dataclass(frozen=True)
class Spec:
    """A parsed spec: an implementation name (None = the default one) and raw options."""

    name: str | None
    options: dict[str, Any] = field(default_factory=dict)
    #: The option names each layered spec gave, earliest first (empty: this spec alone).
    layers: tuple[tuple[str, ...], ...] = field(default=(), compare=False)

    def merged_over(self, base: Spec) -> Spec:
        """This spec layered over ``base`` (e.g. CLI over config file).

        Options-only specs, and specs naming the same implementation, keep ``base``'s
        options and override them key by key; naming another implementation replaces it.
        """
        if self.name is not None and self.name != base.name:
            return self
        return Spec(base.name, {**base.options, **self.options}, (*base.option_layers(), tuple(self.options)))

    def option_layers(self) -> tuple[tuple[str, ...], ...]:
        """The option names of each layer, earliest first."""
        return self.layers or (tuple(self.options),)

    def options_for(self, alternatives: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
        """The options, less those that a later layer replaced by giving an alternative
        (:attr:`~dp2o_core.options.PluginOptions.alternatives`)."""
        options = dict(self.options)
        for group in alternatives:
            for layer in reversed(self.option_layers()):
                given = set(group) & set(layer)
                if given:
                    for replaced in set(group) - given:
                        options.pop(replaced, None)
                    break
        return options

    def __str__(self) -> str:
        opts = ",".join(f"{k}={_format_value(v)}" for k, v in self.options.items())
        if self.name is None:
            return opts
        return f"{self.name}:{opts}" if opts else self.name


@dataclass(frozen=True)
class Resolved:
    """A spec resolved to a registered class and validated options."""

    registration: Registration
    options: PluginOptions

    def build(self) -> Any:
        """An instance of the implementation with these options."""
        return self.registration.cls(self.options)

    def as_record(self) -> dict[str, Any]:
        """What the resolved-config file records about this choice."""
        source = self.registration.source
        return {
            "name": self.registration.name,
            "class": f"{self.registration.cls.__module__}.{self.registration.cls.__qualname__}",
            "distribution": source.distribution,
            "version": source.version,
            "options": self.options.model_dump(mode="json"),
        }

    def fingerprint_record(self, leave_out: Collection[str] = ()) -> dict[str, Any]:
        """:meth:`as_record` without the options whose declared role is in ``leave_out``
        (:data:`~dp2o_core.options.RUNTIME`, :data:`~dp2o_core.options.TRAINING`).

        Stage fingerprints are made from such records, so moving a run to another device or
        changing a chunk size does not redo finished work.
        """
        record = self.as_record()
        skip = set(options_with_role(type(self.options), *leave_out))
        record["options"] = {k: v for k, v in record["options"].items() if k not in skip}
        return record


def parse_spec(text: str, kind: str = "plugin") -> Spec:
    """Parse a spec string; raises :class:`UsageError` naming ``kind`` on bad syntax."""
    text = text.strip()
    if not text:
        raise UsageError(f"empty {kind} spec: give a name such as 'NAME' or 'NAME:KEY=VALUE'")
    colon, equals = _find_top_level(text, ":"), _find_top_level(text, "=")
    if colon != -1 and (equals == -1 or colon < equals):
        name, rest = text[:colon].strip(), text[colon + 1 :]
    elif equals != -1:
        name, rest = None, text
    else:
        return Spec(text)
    if name == "":
        raise UsageError(f"bad {kind} spec {text!r}: nothing before ':'")
    options: dict[str, Any] = {}
    for item in _split_top_level(rest, ","):
        if not item.strip():
            continue
        eq = _find_top_level(item, "=")
        if eq == -1:
            raise UsageError(f"bad {kind} spec {text!r}: {item.strip()!r} is not KEY=VALUE")
        key = item[:eq].strip().replace("-", "_")
        if not key:
            raise UsageError(f"bad {kind} spec {text!r}: an option has no name before '='")
        if key in options:
            raise UsageError(f"bad {kind} spec {text!r}: option {key!r} given twice")
        options[key] = _parse_value(item[eq + 1 :].strip(), text, kind)
    return Spec(name, options)


def resolve_spec(manager: PluginManager, kind: str, spec: Spec | str, default: str | None = None) -> Resolved:
    """Find the implementation a spec names and validate its options.

    ``default`` is the implementation an options-only spec refers to.
    """
    if isinstance(spec, str):
        spec = parse_spec(spec, kind)
    name = spec.name or default
    if name is None:
        raise UsageError(f"the {kind} spec {str(spec)!r} names no {kind}: write NAME:KEY=VALUE")
    registration = manager.lookup(kind, name)
    options = spec.options_for(registration.cls.Options.alternatives)
    return Resolved(registration, validate_options(registration, options, manager))


def validate_options(
    registration: Registration, options: dict[str, Any], manager: PluginManager | None = None
) -> PluginOptions:
    """Build ``registration``'s Options from raw values, with errors a person can act on.

    Validators that look up other plugins (the hybrid reward's members) find the plugin
    manager in the validation context under ``"plugins"``.
    """
    options_cls = registration.cls.Options
    label = f"{registration.kind} {registration.name!r}"
    known = list(options_cls.model_fields)
    for key in options:
        if key not in known:
            raise UnknownNameError(
                f"option for {label}:",
                key,
                known,
                hint=f"Run `dp2o plugins --all --options --kind {registration.kind}` for details.",
            )
    try:
        return options_cls.model_validate(options, context={"plugins": manager})
    except ValidationError as error:
        raise UsageError(_describe_validation_error(label, options_cls, options, error)) from None


def _describe_validation_error(
    label: str, options_cls: type[PluginOptions], given: dict[str, Any], error: ValidationError
) -> str:
    described = {record["name"]: record for record in describe_options(options_cls)}
    lines = []
    for problem in error.errors():
        loc = [str(part) for part in problem.get("loc", ())]
        key = loc[0] if loc else ""
        record = described.get(key)
        if key in given:
            where = f"option {key}={given[key]!r}"
        elif key:
            where = f"option {key}"
        else:
            where = "options"
        allowed = f" (expects {record['type']}: {record['description']})" if record else ""
        message = str(problem["msg"]).removeprefix("Value error, ")  # a validator's own words
        lines.append(f"{where}: {message}{allowed}")
    return f"invalid options for {label}: " + "; ".join(lines)


def _find_top_level(text: str, char: str) -> int:
    depth, quote = 0, ""
    for index, c in enumerate(text):
        if quote:
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        elif c == char and depth == 0:
            return index
    return -1


def _split_top_level(text: str, char: str) -> list[str]:
    parts = []
    while True:
        index = _find_top_level(text, char)
        if index == -1:
            parts.append(text)
            return parts
        parts.append(text[:index])
        text = text[index + 1 :]


def _parse_value(raw: str, spec: str, kind: str) -> Any:
    if raw.startswith("[") or raw.endswith("]"):
        if not (raw.startswith("[") and raw.endswith("]")):
            raise UsageError(f"bad {kind} spec {spec!r}: unbalanced brackets in {raw!r}")
        inner = raw[1:-1]
        return [_parse_value(p.strip(), spec, kind) for p in _split_top_level(inner, ",") if p.strip()]
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    return raw


def _format_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    text = str(value)
    if any(c in text for c in ",:=[]"):
        return '"' + text + '"'
    return text
