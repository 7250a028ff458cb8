"""``dp2o config``: resolve a config file and CLI overrides to every final value."""

from __future__ import annotations

import typer
from dp2o_cli.options import BackboneSpec, ConfigFile, RewardSpec, Seed, SelectorSpec, WeightingSpec
from dp2o_cli.output import print_json
from dp2o_cli.state import CliState

from dp2o_core.config import COMPONENT_DEFAULTS, load_config, resolved_config_record


def config(
    ctx: typer.Context,
    config_file: ConfigFile = None,
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
    run_config = load_config(config_file).with_overrides(
        backbone=backbone, reward=reward, selector=selector, weighting=weighting, seed=seed
    )
    kinds = tuple(
        kind
        for kind, default in COMPONENT_DEFAULTS.items()
        if getattr(run_config, kind).name
        or getattr(run_config, kind).options
        or (default is not None and default in manager.implementations(kind))
    )
    print_json(resolved_config_record(run_config, run_config.resolve(manager, kinds)))
