"""Loading a run's configuration for a command: the config file, then the command's flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dp2o_core.config import RunConfig, load_config


def load_run_config(config_file: Path | None, base: RunConfig | None = None, **flags: Any) -> RunConfig:
    """The config file (else ``base``, else the defaults) with the command's flags layered on top."""
    config = load_config(config_file) if config_file is not None or base is None else base
    return config.with_overrides(**flags)
