"""Loading a run's configuration for a command and recording it in the run directory."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from dp2o_core.atomic import write_text_atomic
from dp2o_core.config import SETTINGS_SECTIONS, RunConfig, load_config, resolved_config_record
from dp2o_core.specs import Resolved
from dp2o_core.store import RunStore


def load_run_config(config_file: Path | None, base: RunConfig | None = None, **flags: Any) -> RunConfig:
    """The config file (else ``base``, else the defaults) with the command's flags layered on top."""
    config = load_config(config_file) if config_file is not None or base is None else base
    return config.with_overrides(**flags)


def write_run_config(
    store: RunStore,
    config: RunConfig,
    resolved: Mapping[str, Resolved],
    owns: Collection[str] = (),
) -> Path:
    """Merge what this command decides into ``RUN/config.json`` (written atomically).

    A command records its resolved components and the settings sections it ``owns``
    (``dp2o sample``: ``sample``; ``dp2o train``: all three); every other section keeps
    what an earlier command recorded, so ``dp2o prepare`` on a trained run does not
    replace its training settings with defaults. A section no command has recorded yet is
    left out.
    """
    path = store.root / "config.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
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
