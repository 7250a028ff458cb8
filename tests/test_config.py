"""Run configuration: TOML and YAML files, CLI overrides, the resolved-config record."""

from __future__ import annotations

import json

import pytest

from dp2o_core.config import RunConfig, load_config, write_resolved_config
from dp2o_core.errors import UsageError
from dp2o_core.specs import Spec


def test_toml_and_yaml_give_the_same_configuration(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('seed = 3\nselector = "ratio:n=2"\n[weighting]\nname = "uniform"\n')
    yaml = tmp_path / "run.yaml"
    yaml.write_text("seed: 3\nselector: ratio:n=2\nweighting: {name: uniform}\n")
    assert load_config(toml) == load_config(yaml)
    config = load_config(toml)
    assert config.seed == 3
    assert config.selector == Spec("ratio", {"n": "2"})
    assert config.weighting == Spec("uniform")


def test_no_file_gives_defaults():
    assert load_config(None) == RunConfig()


def test_cli_overrides_layer_over_the_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('selector = "ratio:ratio=0.125"\nseed = 1\n')
    config = load_config(path).with_overrides(selector="n=2", seed=None, reward="hybrid")
    assert config.selector == Spec("ratio", {"ratio": "0.125", "n": "2"})
    assert config.seed == 1
    assert config.reward == Spec("hybrid")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.toml", "seed = [", "is not valid TOML"),
        ("bad.yaml", "seed: [1", "is not valid YAML"),
        ("list.yaml", "- 1\n- 2\n", "must hold a table of settings"),
        ("extra.toml", "sede = 1\n", "unknown setting 'sede'"),
        ("type.toml", 'seed = "many"\n', "seed: Input should be a valid integer"),
        ("run.ini", "seed = 1\n", "must end in .toml, .yaml or .yml"),
    ],
)
def test_bad_config_files_name_the_file_and_problem(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UsageError) as error:
        load_config(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_resolved_config_records_every_final_value_and_version(tmp_path, dp2o_plugin_manager):
    config = RunConfig(seed=11, selector="ratio=0.125")
    resolved = config.resolve(dp2o_plugin_manager, ("selector",))
    path = write_resolved_config(tmp_path / "run" / "config.json", config, resolved)
    record = json.loads(path.read_text())
    assert record["seed"] == 11
    assert record["dp2o_version"]
    assert record["packages"]["torch"]
    selector = record["components"]["selector"]
    assert selector == {
        "name": "ratio",
        "class": "dp2o_plugins.selectors.ratio.RatioSelector",
        "distribution": "dp2o",
        "version": record["dp2o_version"],
        "options": {"ratio": 0.125, "n": None},
        "given": {"ratio": 0.125},  # what a later command on the run starts from
    }
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temporary file left


def test_a_backbones_paper_settings_are_its_defaults_unless_set(dp2o_cli, dp2o_plugin_manager, tmp_path):
    """C-FLUX samples M = 64 with N/M = 1/16, C-SD2 M = 32 with 1/4, unless a flag says otherwise."""
    from dp2o_cli.train_cmd import train_config

    def resolved(*args: str) -> tuple[int, dict]:
        record = json.loads(dp2o_cli("config", *args).stdout)
        return record["sample"]["num_candidates"], record["components"]["selector"]["options"]

    assert resolved("--backbone", "flux") == (64, {"ratio": 0.0625, "n": None})
    assert resolved("--backbone", "flux:steps=10") == (64, {"ratio": 0.0625, "n": None})
    assert resolved("--backbone", "flux", "--selector", "ratio=0.25") == (64, {"ratio": 0.25, "n": None})
    assert resolved("--backbone", "sd2") == (32, {"ratio": 0.25, "n": None})
    names = ("max_steps", "batch_size", "micro_batch_size", "learning_rate", "warmup_steps", "beta", "loss")
    names += ("swap_labels", "mixed_precision", "checkpoint_every", "tracker")
    flags = dict(config_file=None, run=tmp_path / "run", shared_noise=None, backbone="flux", selector=None)
    flags |= dict.fromkeys(names)
    config, source = train_config(num_candidates=None, manager=dp2o_plugin_manager, **flags)
    assert source == "defaults" and config.sample.num_candidates == 64
    assert str(config.selector) == "ratio:ratio=0.0625"
    config, _ = train_config(num_candidates=16, manager=dp2o_plugin_manager, **flags)
    assert config.sample.num_candidates == 16


def test_a_config_file_naming_a_backbone_gets_its_paper_settings_where_it_sets_none(dp2o_cli, tmp_path):
    """A file saying only ``backbone = "flux"`` samples as C-FLUX did; what the file sets wins."""

    def resolved(text: str, *args: str) -> tuple[int, dict]:
        path = tmp_path / "run.toml"
        path.write_text(text)
        record = json.loads(dp2o_cli("config", "--config", str(path), *args).stdout)
        return record["sample"]["num_candidates"], record["components"]["selector"]["options"]

    assert resolved('backbone = "flux"\n') == (64, {"ratio": 0.0625, "n": None})
    assert resolved('backbone = "sd2"\n', "--backbone", "flux") == (64, {"ratio": 0.0625, "n": None})
    flux16 = 'backbone = "flux"\n[sample]\nnum_candidates = 16\n'
    assert resolved(flux16) == (16, {"ratio": 0.0625, "n": None})
    assert resolved('backbone = "flux"\nselector = "ratio=0.5"\n[sample]\nshared_noise = true\n') == (
        64,
        {"ratio": 0.5, "n": None},
    )
    assert resolved('backbone = "tiny-sr"\n')[0] == 32  # no paper settings: the generic default


def test_dp2o_train_with_a_config_file_applies_its_backbones_paper_settings(dp2o_plugin_manager, tmp_path):
    from dp2o_cli.train_cmd import train_config

    path = tmp_path / "flux.toml"
    path.write_text('backbone = "flux"\n[train]\nbeta = 2000\n')
    names = ("max_steps", "batch_size", "micro_batch_size", "learning_rate", "warmup_steps", "beta", "loss")
    names += ("swap_labels", "mixed_precision", "checkpoint_every", "tracker", "backbone", "selector")
    flags = dict(run=tmp_path / "run", shared_noise=None) | dict.fromkeys(names)
    config, source = train_config(config_file=path, num_candidates=None, manager=dp2o_plugin_manager, **flags)
    assert source == "file" and config.sample.num_candidates == 64 and config.train.beta == 2000
    assert str(config.selector) == "ratio:ratio=0.0625"
