"""Loads plugins and answers which implementation a name means.

:class:`PluginManager` is the typed facade over pluggy: it registers the built-ins, then
each ``dp2o`` entry point on its own inside a guard, then modules named with
``dp2o -p MODULE``; it calls every plugin's ``register_<kind>s`` hook and keeps what each
registered, so that a failure is pinned on the distribution at fault and everything else
keeps working.

Environment variables:

* ``DP2O_LOAD_PLUGINS`` — comma-separated allow-list of entry-point or distribution
  names; set but empty loads no third-party plugin.
* ``DP2O_DISABLE_PLUGINS`` — comma-separated block-list, applied before import.
* ``DP2O_PLUGIN_ERRORS=raise`` — re-raise a plugin's error with its traceback instead of
  recording it (for plugin authors).
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

import pluggy

from dp2o_core import hookspecs
from dp2o_core.errors import PluginError, UnknownNameError, UsageError
from dp2o_core.interfaces import INTERFACES, Backbone, Implementation, PairSelector, RewardModel, Weighting
from dp2o_core.validation import implementation_problems

KINDS: tuple[str, ...] = tuple(INTERFACES)
ENTRY_POINT_GROUP = "dp2o"
BUILTIN_MODULES: tuple[str, ...] = (
    "dp2o_plugins.selectors",
    "dp2o_plugins.datasets",
    "dp2o_plugins.degradations",
    "dp2o_plugins.prompters",
    "dp2o_plugins.rewards",
    "dp2o_plugins.weightings",
    "dp2o_plugins.backbones",
)

#: Plugins added with :func:`dp2o_core.testing` fixtures; every new manager registers them.
IN_PROCESS_PLUGINS: list[tuple[str, object]] = []

Status = Literal["ok", "failed", "disabled", "conflict"]
Origin = Literal["builtin", "entry-point", "module", "in-process"]


@dataclass
class PluginSource:
    """One loaded (or refused) plugin: where it came from and what it provides."""

    key: str
    distribution: str
    version: str | None
    origin: Origin
    status: Status = "ok"
    error: str | None = None
    provides: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in KINDS})

    @property
    def label(self) -> str:
        """``distribution version`` — how messages name the plugin."""
        return f"{self.distribution} {self.version}" if self.version else self.distribution


@dataclass(frozen=True)
class Registration:
    """One registered implementation and the plugin that provided it.

    The class itself is imported on first use of :attr:`cls`: a built-in read from the
    registry cache (:mod:`dp2o_core.registry_cache`) is known by its ``module:qualname``,
    name, aliases and summary without importing its module.
    """

    kind: str
    name: str
    aliases: tuple[str, ...]
    class_path: str
    summary: str
    source: PluginSource
    _loaded: list[type[Implementation]] = field(default_factory=list, repr=False, compare=False)
    _described: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(
        cls, kind: str, implementation: type[Implementation], aliases: tuple[str, ...], source: PluginSource
    ):
        """The registration of a class in hand (what a plugin's hook passed to ``register``)."""
        path = f"{implementation.__module__}:{implementation.__qualname__}"
        summary = ((implementation.__doc__ or "").strip().splitlines() or [""])[0]
        return cls(kind, implementation.name, aliases, path, summary, source, [implementation])

    def cache_record(self) -> dict[str, Any]:
        """What the registry cache keeps of this registration (:meth:`from_cache_record`)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "aliases": list(self.aliases),
            "class": self.class_path,
            "summary": self.summary,
            "options": self.described_options(),
        }

    @classmethod
    def from_cache_record(cls, record: Mapping[str, Any], source: PluginSource) -> Registration:
        """A registration of ``source`` known from the cache, its class not yet imported."""
        return cls(
            record["kind"], record["name"], tuple(record["aliases"]), record["class"], record["summary"],
            source, _described=record["options"],
        )  # fmt: skip

    @property
    def cls(self) -> type[Implementation]:
        """The implementation class (imported now if it came from the registry cache)."""
        if not self._loaded:
            module_name, _, qualname = self.class_path.partition(":")
            try:
                found: Any = importlib.import_module(module_name)
                for part in qualname.split("."):
                    found = getattr(found, part)
            except Exception as error:
                from dp2o_core.registry_cache import cache_file

                raise PluginError(
                    f"{self.kind} {self.name!r} of {self.source.label} ({self.class_path}) cannot be "
                    f"imported: {type(error).__name__}: {error}. If dp2o was changed or reinstalled, "
                    f"delete {cache_file().parent} (dp2o's registry cache) and run again."
                ) from error
            self._loaded.append(found)
        return self._loaded[0]

    def described_options(self) -> list[dict[str, Any]]:
        """Each option as JSON-ready records (name, type, default, description, …): from the
        registry cache when the class has not been imported, else from its ``Options``."""
        from dp2o_core.options import describe_options

        if self._described is not None and not self._loaded:
            return self._described
        return json.loads(json.dumps(describe_options(self.cls.Options)))


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _names_from_env(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {_normalise(part) for part in value.split(",") if part.strip()}


class PluginManager:
    """Built-ins, installed entry points and ``-p`` modules, registered and indexed by kind.

    Example::

        manager = PluginManager()
        ratio = manager.selector("ratio")      # Registration; .cls is RatioSelector
        manager.implementations("selector")   # {"best-worst": …, "ratio": …}
    """

    def __init__(
        self,
        *,
        entry_points: bool = True,
        modules: Iterable[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._raise = env.get("DP2O_PLUGIN_ERRORS", "").strip().lower() == "raise"
        self._allow = _names_from_env(env.get("DP2O_LOAD_PLUGINS"))
        self._block = _names_from_env(env.get("DP2O_DISABLE_PLUGINS")) or set()
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._sources: list[PluginSource] = []
        self._plugins: list[object] = []
        self._by_name: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        self._conflicts: dict[tuple[str, str], list[Registration]] = {}

        self._add_builtins(PluginSource("dp2o", "dp2o", dp2o_version(), "builtin"), env)
        if entry_points:
            for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
                self._add_entry_point(entry_point)
        for module_name in modules:
            self._add_module(module_name)
        for name, plugin in IN_PROCESS_PLUGINS:
            self.add_plugin(plugin, name)

    # -- loading --------------------------------------------------------------------
    def _add_builtins(self, builtins: PluginSource, env: Mapping[str, str]) -> None:
        """dp2o's own plugins: from the registry cache when it is current (no import of
        their modules, torch or diffusers), else by importing them, which refreshes it."""
        from dp2o_core import registry_cache

        use_cache = env.get("DP2O_REGISTRY_CACHE", "").strip().lower() not in ("0", "false", "no", "off")
        records = registry_cache.read() if use_cache else None
        if records is not None:
            self._sources.append(builtins)
            for record in records:
                self._index(Registration.from_cache_record(record, builtins))
            return
        for module_name in BUILTIN_MODULES:
            self._add(builtins, lambda name=module_name: importlib.import_module(name))
        if use_cache and builtins.status == "ok":
            registry_cache.write(  # in registration order, as the built-ins' own hooks gave them
                [
                    self._by_name[kind][name].cache_record()
                    for kind in KINDS
                    for name in builtins.provides[kind]
                ]
            )

    def _add_entry_point(self, entry_point: metadata.EntryPoint) -> None:
        dist = entry_point.dist
        dist_name = dist.metadata["Name"] if dist is not None else entry_point.value
        source = PluginSource(
            key=entry_point.name,
            distribution=dist_name,
            version=dist.version if dist is not None else None,
            origin="entry-point",
        )
        names = {_normalise(entry_point.name), _normalise(dist_name)}
        if names & self._block:
            source.status, source.error = "disabled", "disabled by DP2O_DISABLE_PLUGINS"
        elif self._allow is not None and not names & self._allow:
            source.status, source.error = "disabled", "not listed in DP2O_LOAD_PLUGINS"
        if source.status == "disabled":
            self._sources.append(source)
            return
        self._add(source, entry_point.load)

    def _add_module(self, module_name: str) -> None:
        if any(s.key == module_name for s in self._sources):
            return
        try:
            importlib.import_module(module_name)
        except Exception as error:
            if self._raise:
                raise
            raise UsageError(_module_import_problem(module_name, error)) from None
        source = PluginSource(module_name, module_name, None, "module")
        self._add(source, lambda: importlib.import_module(module_name))

    def add_plugin(self, plugin: object, name: str = "in-process") -> PluginSource:
        """Register an object or module with hook implementations (tests, notebooks)."""
        source = PluginSource(name, name, None, "in-process")
        self._add(source, lambda: plugin)
        return source

    def _add(self, source: PluginSource, load: Any) -> None:
        if source not in self._sources:
            self._sources.append(source)
        try:
            plugin = load()
            if any(plugin is known for known in self._plugins):
                raise PluginError(f"plugin object {plugin!r} is already registered")
            self._pm.register(plugin, name=f"{source.distribution}:{getattr(plugin, '__name__', source.key)}")
            unknown = [
                caller.name for caller in self._pm.get_hookcallers(plugin) or [] if not caller.has_spec()
            ]
            if unknown:
                self._pm.unregister(plugin)
                raise PluginError(f"implements unknown hooks: {', '.join(unknown)}")
        except Exception as error:  # noqa: BLE001 - any plugin failure is recorded, never fatal
            self._fail(source, error)
            return
        self._plugins.append(plugin)
        try:
            registrations = [reg for kind in KINDS for reg in self._collect(source, plugin, kind)]
        except Exception as error:  # noqa: BLE001 - any plugin failure is recorded, never fatal
            self._fail(source, error)
            return
        for registration in registrations:
            self._index(registration)

    def _collect(self, source: PluginSource, plugin: object, kind: str) -> list[Registration]:
        """Call ``plugin``'s hook for ``kind`` and return what it registered, checked."""
        caller = getattr(self._pm.hook, f"register_{kind}s")
        added: list[Registration] = []

        def register(cls: Any, aliases: tuple[str, ...] = ()) -> None:
            aliases = tuple(aliases)
            problems = implementation_problems(cls, kind, aliases)
            if problems:
                raise PluginError(f"cannot register {kind} {cls!r}: " + "; ".join(problems))
            added.append(Registration.of(kind, cls, aliases, source))

        for impl in caller.get_hookimpls():
            if impl.plugin is plugin:
                impl.function(register=register)
        return added

    def _index(self, registration: Registration) -> None:
        kind, table = registration.kind, self._by_name[registration.kind]
        registration.source.provides[kind].append(registration.name)
        for key in (registration.name, *registration.aliases):
            existing = table.get(key)
            if existing is None or existing.cls is registration.cls:
                table[key] = registration
                continue
            clash = self._conflicts.setdefault((kind, key), [existing])
            clash.append(registration)
            message = (
                f"{kind} {key!r} is provided by both {existing.source.label} and {registration.source.label}"
            )
            if self._raise:
                raise PluginError(message)
            for reg in clash:
                if reg.source.origin != "builtin":
                    reg.source.status = "conflict"
                    reg.source.error = message

    def _fail(self, source: PluginSource, error: BaseException) -> None:
        if self._raise:
            raise error
        source.status = "failed"
        source.error = f"{type(error).__name__}: {error}"
        for kind in KINDS:
            source.provides[kind].clear()

    # -- queries ----------------------------------------------------------------------
    def sources(self) -> list[PluginSource]:
        """Every plugin seen, built-ins first, with its status."""
        return list(self._sources)

    def implementations(self, kind: str) -> dict[str, Registration]:
        """Registered implementations of ``kind`` by their own name (aliases left out)."""
        self._check_kind(kind)
        return {name: reg for name, reg in sorted(self._by_name[kind].items()) if name == reg.name}

    def lookup(self, kind: str, name: str) -> Registration:
        """The implementation of ``kind`` called ``name`` (or an alias of it)."""
        self._check_kind(kind)
        clash = self._conflicts.get((kind, name))
        if clash:
            labels = " and ".join(reg.source.label for reg in clash)
            raise PluginError(
                f"{kind} {name!r} is provided by both {labels}. Uninstall one of them or "
                "disable it with DP2O_DISABLE_PLUGINS=<distribution>."
            )
        table = self._by_name[kind]
        if name not in table:
            raise UnknownNameError(
                kind, name, table, hint=f"Run `dp2o plugins --all --kind {kind}` to list them."
            )
        return table[name]

    def backbone(self, name: str) -> type[Backbone]:
        """The Backbone class registered as ``name``."""
        return self.lookup("backbone", name).cls  # type: ignore[return-value]

    def reward(self, name: str) -> type[RewardModel]:
        """The RewardModel class registered as ``name``."""
        return self.lookup("reward", name).cls  # type: ignore[return-value]

    def selector(self, name: str) -> type[PairSelector]:
        """The PairSelector class registered as ``name``."""
        return self.lookup("selector", name).cls  # type: ignore[return-value]

    def weighting(self, name: str) -> type[Weighting]:
        """The Weighting class registered as ``name``."""
        return self.lookup("weighting", name).cls  # type: ignore[return-value]

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in KINDS:
            raise UnknownNameError("plugin kind", kind, KINDS)


def dp2o_version() -> str:
    try:
        return metadata.version("dp2o")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _module_import_problem(module_name: str, error: Exception) -> str:
    """Why a ``-p`` module did not import: not found (its name or the path), or found but
    its own imports failed (a missing package, named), or it raised."""
    prefix = f"could not import plugin module {module_name!r} given with -p: "
    if isinstance(error, ModuleNotFoundError) and error.name is not None:
        parts = module_name.split(".")
        own = {".".join(parts[: i + 1]) for i in range(len(parts))}
        if error.name in own:
            return (
                prefix + f"no module named {error.name!r}. Check the module name and that its folder is "
                "on PYTHONPATH (or in the current directory)."
            )
        top = error.name.split(".")[0]
        return (
            prefix + f"it was found, but it imports {error.name!r}, which is not installed. "
            f"Install it (pip install {top}) or fix the import in the module."
        )
    return prefix + f"importing it raised {type(error).__name__}: {error}"
