"""Loading a run's configuration for a command: the config file, then the command's flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dp2o_core.config import RunConfig, load_config
from dp2o_core.errors import Dp2oError
from dp2o_core.specs import parse_spec


def load_run_config(config_file: Path | None, base: RunConfig | None = None, **flags: Any) -> RunConfig:
    """The config file (else ``base``, else the defaults) with the command's flags layered on top."""
    config = load_config(config_file) if config_file is not None or base is None else base
    return config.with_overrides(**flags)


def backbone_settings(manager: Any, backbone: str | None) -> dict[str, Any]:
    """The run settings of the named backbone's paper setup (``Backbone.paper_settings``), for a
    command that was given none of them; empty without a backbone name."""
    name = parse_spec(backbone, "backbone").name if backbone else None
    if name is None or manager is None:
        return {}
    try:
        return dict(manager.backbone(name).paper_settings)
    except Dp2oError:  # a misspelt name is named when the spec is resolved
        return {}
