"""``dp2o config``: resolve a config file and CLI overrides to every final value."""

from __future__ import annotations

import typer
from dp2o_cli.options import (
    BackboneSpec,
    ConfigFile,
    DataSpec,
    DegradationSpec,
    PrompterSpec,
    RewardSpec,
    Seed,
    SelectorSpec,
    WeightingSpec,
)
from dp2o_cli.output import print_json
from dp2o_cli.run_config import paper_settings_unset
from dp2o_cli.state import CliState

from dp2o_core.config import COMPONENTS, load_config, resolved_config_record


def config(
    ctx: typer.Context,
    config_file: ConfigFile = None,
    data: DataSpec = None,
    degradation: DegradationSpec = None,
    prompter: PrompterSpec = None,
    backbone: BackboneSpec = None,
    reward: RewardSpec = None,
    selector: SelectorSpec = None,
    weighting: WeightingSpec = None,
    seed: Seed = None,
) -> None:
    """Print the resolved configuration (every option's final value, plugin versions) as JSON.

    Components that are neither configured nor have an installed default are left out.
    """
    manager = ctx.ensure_object(CliState).manager
    # the backbone's paper settings (M, the selector) where neither a flag nor the file sets them
    file_config = load_config(config_file)
    paper = paper_settings_unset(manager, backbone, file_config if config_file is not None else None)
    run_config = file_config.with_overrides(
        data=data,
        degradation=degradation,
        prompter=prompter,
        backbone=backbone,
        reward=reward,
        selector=selector or paper.get("selector"),
        weighting=weighting,
        seed=seed,
        sample={"num_candidates": paper.get("num_candidates")},
    )
    keys = tuple(
        key
        for key, (kind, default) in COMPONENTS.items()
        if getattr(run_config, key).name
        or getattr(run_config, key).options
        or (default is not None and default in manager.implementations(kind))
    )
    print_json(resolved_config_record(run_config, run_config.resolve(manager, keys)))
