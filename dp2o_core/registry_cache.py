"""The registry cache: dp2o's built-in plugins known without importing them.

Importing the built-in plugin modules costs more than the CLI's own libraries (the
backbones, the rewards and the datasets import their helpers at module level), and
``dp2o plugins`` or an error about a misspelt name needs only their names, kinds, aliases,
classes, summaries and options (as ``dp2o plugins --json`` prints them). After the
built-ins are imported once they are written here; the next process reads them back and
imports a class only when it is used.

The cache is keyed by dp2o's version, the Python version and the size and modification time
of every source file of ``dp2o_core`` and ``dp2o_plugins``, so a new release, another
environment or an edited checkout reads its own entry. Third-party plugins are never
cached: their entry points are loaded on every run. ``DP2O_REGISTRY_CACHE=0`` turns the
cache off; the file is ``$DP2O_CACHE/registry/builtins-<key>.json`` and can be deleted at
any time.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from dp2o_core.cache import cache_dir

FORMAT = 2


def cache_file() -> Path:
    """This installation's cache file (it may not exist yet)."""
    return cache_dir() / "registry" / f"builtins-{_key()}.json"


def read() -> list[dict[str, Any]] | None:
    """The cached built-in registrations, or None when there are none for this key (or
    the file is unreadable: the caller imports the built-ins and writes it again)."""
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            return None
        records = data["registrations"]
        fields = {"kind", "name", "aliases", "class", "summary", "options"}  # Registration.cache_record
        if not all(set(r) == fields for r in records):
            return None
        return records
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write(records: list[dict[str, Any]]) -> None:
    """Store ``records``; a cache that cannot be written is skipped without a word."""
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"format": FORMAT, "registrations": records}), encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        pass


@functools.cache
def _key() -> str:
    """The cache key of this process's code: taken once, at its first use — a process that
    imported its code before the sources changed (a long test run during an edit, an upgrade
    under a running job) keeps reading and writing under the key of the code it runs, never
    under the new sources' key with the old registrations."""
    from dp2o_core.registry import dp2o_version

    digest = hashlib.sha256(f"{FORMAT}\x1f{dp2o_version()}\x1f{sys.version}".encode())
    for package in ("dp2o_core", "dp2o_plugins"):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for folder in spec.submodule_search_locations:
            for path in sorted(Path(folder).rglob("*.py")):
                stat = path.stat()
                digest.update(f"{path}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]
