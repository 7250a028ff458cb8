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


def paper_settings_unset(manager: Any, backbone: str | None, file_config: RunConfig | None) -> dict[str, Any]:
    """The backbone's paper settings (M and the selector) that the config file, if any, leaves
    unset: a file naming ``backbone = "flux"`` and no selector samples as C-FLUX did. The
    backbone is the flag's, else the file's."""
    if file_config is None:
        return backbone_settings(manager, backbone)
    name = backbone or file_config.backbone.name
    paper = backbone_settings(manager, name)
    if "selector" in file_config.model_fields_set:
        paper.pop("selector", None)
    if "sample" in file_config.model_fields_set and "num_candidates" in file_config.sample.model_fields_set:
        paper.pop("num_candidates", None)
    return paper


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
