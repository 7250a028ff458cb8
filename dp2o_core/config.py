"""The run configuration: file (TOML or YAML), then CLI flags, then a resolved record.

A config file sets any field of :class:`RunConfig`; a component may be a spec string or
a table whose ``name`` key picks the implementation and whose other keys are options::

    # dp2o.toml
    seed = 7
    backbone = "flux"
    selector = "ratio=0.25"

    [reward]
    name = "hybrid"
    balance = 0.5

CLI flags are layered over the file with the same rules as :meth:`Spec.merged_over`.
:func:`write_resolved_config` records every option's final value, the plugins'
distributions and versions, and the seeds, as JSON beside a run's results.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Collection, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dp2o_core.atomic import write_text_atomic
from dp2o_core.errors import UsageError
from dp2o_core.specs import Resolved, Spec, parse_spec, resolve_spec
from dp2o_core.training.settings import (
    EvalSettings,
    PretrainSettings,
    RoundsSettings,
    SampleSettings,
    TrainSettings,
)

if TYPE_CHECKING:
    from dp2o_core.store import RunStore

#: The components a run configures: config key (= CLI flag) → (plugin kind, default name).
COMPONENTS: dict[str, tuple[str, str | None]] = {
    "data": ("dataset", "photos"),
    "degradation": ("degradation", "realesrgan"),
    "prompter": ("prompter", "sidecar"),
    "backbone": ("backbone", "tiny-sr"),
    "reward": ("reward", "hybrid"),
    "selector": ("selector", "ratio"),
    "weighting": ("weighting", "hierarchical"),
    "eval_data": ("dataset", None),
}


#: Config sections that are plain settings (not plugin specs), and their models.
SECTION_MODELS: dict[str, type[BaseModel]] = {
    "sample": SampleSettings,
    "train": TrainSettings,
    "eval": EvalSettings,
    "rounds": RoundsSettings,
    "pretrain": PretrainSettings,
}
SETTINGS_SECTIONS = tuple(SECTION_MODELS)


class RunConfig(BaseModel):
    """Everything a run is configured by; later stages add their own fields here."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    run: Path | None = Field(None, description="Run directory that holds every stage's output.")
    data: Spec = Field(Spec(None), description="Data set spec, e.g. 'hr:path=images,crop=512'.")
    degradation: Spec = Field(
        Spec(None), description="How LR is made from HR, e.g. 'realesrgan' or 'bicubic'."
    )
    prompter: Spec = Field(
        Spec(None), description="What prompt each LR input gets: 'sidecar' (its .txt file) or 'fixed:text=…'."
    )
    backbone: Spec = Field(Spec(None), description="SR generator spec, e.g. 'flux' or 'sd2:steps=20'.")
    reward: Spec = Field(Spec(None), description="Reward spec, e.g. 'hybrid'.")
    selector: Spec = Field(Spec(None), description="Pair selector spec, e.g. 'ratio=0.25'.")
    weighting: Spec = Field(Spec(None), description="Pair weighting spec, e.g. 'hierarchical'.")
    eval_data: Spec = Field(
        Spec(None), description="Held-out data evaluated after training, e.g. 'photos:split=held-out'."
    )
    seed: int = Field(0, ge=0, description="Base seed from which every random choice of the run derives.")
    sample: SampleSettings = Field(SampleSettings(), description="Candidates per input and their seeds.")
    train: TrainSettings = Field(TrainSettings(), description="DPO objective and optimisation.")
    eval: EvalSettings = Field(EvalSettings(), description="Held-out evaluation after training.")
    rounds: RoundsSettings = Field(RoundsSettings(), description="Iterative on-policy rounds.")
    pretrain: PretrainSettings = Field(
        PretrainSettings(), description="Supervised pretraining of the generator (dp2o pretrain)."
    )

    @field_validator(*COMPONENTS, mode="before")
    @classmethod
    def _coerce_spec(cls, value: Any, info: Any) -> Spec:
        return coerce_spec(value, info.field_name)

    def with_overrides(self, **overrides: Any) -> RunConfig:
        """A copy with CLI values layered on top; None means 'not given'."""
        updates: dict[str, Any] = {}
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in RunConfig.model_fields:
                raise UsageError(f"unknown configuration field {key!r}")
            if key in COMPONENTS:
                value = coerce_spec(value, key).merged_over(getattr(self, key))
            elif key in SETTINGS_SECTIONS:
                given = {name: v for name, v in dict(value).items() if v is not None}
                value = {**getattr(self, key).model_dump(), **given}
            updates[key] = value
        try:
            # shallow: the unchanged fields stay as they are (a layered Spec keeps its layers)
            return RunConfig.model_validate({**dict(self), **updates})
        except ValidationError as error:
            raise UsageError(_format_config_error("command line", error)) from None

    def resolve(self, manager: Any, keys: tuple[str, ...] = tuple(COMPONENTS)) -> dict[str, Resolved]:
        """Resolve the named components (config keys) against the registered plugins."""
        resolved = {}
        for key in keys:
            kind, default = COMPONENTS[key]
            resolved[key] = resolve_spec(manager, kind, getattr(self, key), default)
        return resolved


def coerce_spec(value: Any, kind: str) -> Spec:
    """A Spec from a spec string, a ``{name: …, KEY: VALUE}`` table or a Spec."""
    if isinstance(value, Spec):
        return value
    if isinstance(value, str):
        return parse_spec(value, kind)
    if isinstance(value, Mapping):
        table = dict(value)
        name = table.pop("name", None)
        if "options" in table and isinstance(table["options"], Mapping) and len(table) == 1:
            table = dict(table["options"])
        return Spec(name, {key.replace("-", "_"): v for key, v in table.items()})
    raise UsageError(f"{kind} must be a spec string or a table, got {value!r}")


def load_config(path: Path | None) -> RunConfig:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file; None gives the defaults."""
    if path is None:
        return RunConfig()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot read config file {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise UsageError(
            f"config file {path} is not UTF-8 text (byte {error.start}); save it as UTF-8"
        ) from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = _toml_loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise UsageError(f"config file {path} must end in .toml, .yaml or .yml")
    except UsageError:
        raise
    except Exception as error:  # noqa: BLE001 - tomllib and yaml raise their own types
        raise UsageError(f"config file {path} is not valid {suffix[1:].upper()}: {error}") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a table of settings, not {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        raise UsageError(_format_config_error(str(path), error)) from None


def _toml_loads(text: str) -> Any:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


def _format_config_error(where: str, error: ValidationError) -> str:
    problems = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem.get("loc", ()))
        if problem["type"] == "extra_forbidden":
            section = problem.get("loc", ("",))[0]
            fields = (
                SECTION_MODELS[str(section)].model_fields
                if section in SETTINGS_SECTIONS and len(problem.get("loc", ())) > 1
                else RunConfig.model_fields
            )
            known = ", ".join(fields)
            problems.append(f"unknown setting {key!r} (known: {known})")
        else:
            problems.append(f"{key}: {problem['msg']} (given {problem.get('input')!r})")
    return f"invalid configuration in {where}: " + "; ".join(problems)


def resolved_config_record(config: RunConfig, resolved: Mapping[str, Resolved]) -> dict[str, Any]:
    """The JSON-ready record of a run's configuration with every final value."""
    return {
        "dp2o_version": _version("dp2o"),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in ("torch", "diffusers", "pyiqa", "accelerate")},
        "seed": config.seed,
        "run": str(config.run) if config.run is not None else None,
        **{section: getattr(config, section).model_dump() for section in SETTINGS_SECTIONS},
        "components": {
            # "given": the options set explicitly, which a later command on the run starts from
            kind: {**item.as_record(), "given": item.options.model_dump(mode="json", exclude_unset=True)}
            for kind, item in resolved.items()
        },
    }


def write_resolved_config(path: Path, config: RunConfig, resolved: Mapping[str, Resolved]) -> Path:
    """Write :func:`resolved_config_record` as JSON to ``path`` atomically."""
    record = resolved_config_record(config, resolved)
    write_text_atomic(Path(path), json.dumps(record, indent=2, sort_keys=True) + "\n")
    return Path(path)


def record_run_config(
    store: RunStore,
    config: RunConfig,
    resolved: Mapping[str, Resolved],
    owns: Collection[str] = (),
) -> Path:
    """Merge what one command decides into ``RUN/config.json`` (written atomically).

    A command records its resolved components and the settings sections it ``owns``
    (``dp2o sample``: ``sample``; ``dp2o train``: all three); every other section keeps
    what an earlier command recorded, so ``dp2o prepare`` on a trained run does not
    replace its training settings with defaults. A section no command has recorded yet is
    left out. An unreadable record stops the command (:func:`read_run_record`): merging into
    nothing would silently drop what it held.
    """
    path = store.root / "config.json"
    record = read_run_record(store) or {}
    fresh = resolved_config_record(config, resolved)
    for section in SETTINGS_SECTIONS:
        if section in owns:
            continue
        if section in record:
            fresh[section] = record[section]
        else:
            fresh.pop(section, None)
    fresh["components"] = {**record.get("components", {}), **fresh["components"]}
    write_text_atomic(path, json.dumps(fresh, indent=2, sort_keys=True) + "\n")
    return path


def read_run_record(store: RunStore) -> dict[str, Any] | None:
    """``RUN/config.json`` as recorded, or None when the run has none (a new run).

    A record that exists but cannot be read or parsed (a truncated copy, a disk error) is a
    :class:`UsageError` naming the file and how to recover: guessing defaults in its place
    would make the next command redo the run's finished stages with other settings.
    """
    path = store.root / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        problem = getattr(error, "strerror", None) or str(error)
        raise UsageError(_unreadable_record(path, problem)) from None
    try:
        record = json.loads(text)
    except ValueError as error:
        raise UsageError(_unreadable_record(path, f"not valid JSON: {error}")) from None
    if not isinstance(record, dict):
        raise UsageError(_unreadable_record(path, f"a JSON {type(record).__name__}, not an object"))
    return record


def _unreadable_record(path: Path, problem: str) -> str:
    return (
        f"the run's configuration record {path} cannot be read ({problem}). Restore it from a copy "
        f"of the run, or move it away and pass the run's settings again (--config FILE and the "
        f"flags it was made with); each stage's own settings are in its stage.json beside it"
    )


def recorded_config(store: RunStore) -> RunConfig | None:
    """The configuration ``RUN/config.json`` records: the components with every option, the
    seed and each settings section a command recorded (``sample``, ``train``, ``eval``,
    ``rounds``); None for a run without a record. A command on an existing run starts from
    it, so ``dp2o pairs RUN`` recombines with the reward the run was scored with and
    ``dp2o train --run RUN`` continues the run as it was made, not with the defaults.

    A record that cannot be read, or that this version cannot take (an option or section
    it does not know), is a :class:`UsageError` naming the file.
    """
    record = read_run_record(store)
    if record is None:
        return None
    components = {
        key: Spec(item.get("name"), dict(item.get("given", item.get("options")) or {}))
        for key, item in (record.get("components") or {}).items()
        if key in COMPONENTS and isinstance(item, Mapping)
    }
    sections = {
        section: record[section] for section in SETTINGS_SECTIONS if isinstance(record.get(section), Mapping)
    }
    try:
        return RunConfig().with_overrides(seed=record.get("seed"), **components, **sections)
    except UsageError as error:
        raise UsageError(
            f"the run's configuration record {store.root / 'config.json'} does not fit this version of "
            f"dp2o ({error}); pass the run's settings with --config FILE"
        ) from None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
