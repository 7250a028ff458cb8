"""Loading a run's configuration for a command and recording it in the run directory."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dp2o_core.atomic import write_text_atomic
from dp2o_core.config import RunConfig, load_config, resolved_config_record
from dp2o_core.specs import Resolved
from dp2o_core.store import RunStore


def load_run_config(config_file: Path | None, base: RunConfig | None = None, **flags: Any) -> RunConfig:
    """The config file (else ``base``, else the defaults) with the command's flags layered on top."""
    config = load_config(config_file) if config_file is not None or base is None else base
    return config.with_overrides(**flags)


def write_run_config(store: RunStore, config: RunConfig, resolved: Mapping[str, Resolved]) -> Path:
    """Merge this command's resolved components into ``RUN/config.json`` (written atomically)."""
    path = store.root / "config.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    fresh = resolved_config_record(config, resolved)
    components = {**record.get("components", {}), **fresh["components"]}
    write_text_atomic(path, json.dumps({**fresh, "components": components}, indent=2, sort_keys=True) + "\n")
    return path
