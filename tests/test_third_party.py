"""Real pip-installed plugin packages, seen through the real ``dp2o`` process."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import run_dp2o


def _plugins(env):
    done = run_dp2o("plugins", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return {p["distribution"]: p for p in json.loads(done.stdout)["plugins"]}


def test_installed_selector_is_listed_with_its_distribution(plugin_env):
    plugins = _plugins(plugin_env)
    example = plugins["dp2o-example-selector"]
    assert example["status"] == "ok"
    assert example["version"] == "0.3.1"
    assert example["origin"] == "entry-point"
    assert example["provides"]["selector"] == ["median-split"]


def test_installed_selector_is_usable_by_name_and_alias_in_a_spec(plugin_env):
    for spec in ("median-split:max_pairs=3", "median:max_pairs=3"):
        done = run_dp2o("config", "--selector", spec, env=plugin_env)
        assert done.returncode == 0, done.stderr
        selector = json.loads(done.stdout)["components"]["selector"]
        assert selector["name"] == "median-split"
        assert selector["distribution"] == "dp2o-example-selector"
        assert selector["version"] == "0.3.1"
        assert selector["options"] == {"max_pairs": 3}


def test_broken_plugin_is_reported_and_nothing_else_stops(plugin_env):
    broken = _plugins(plugin_env)["dp2o-broken-plugin"]
    assert broken["status"] == "failed"
    assert broken["version"] == "0.0.1"
    assert "RuntimeError: dp2o-broken-plugin cannot be imported" in broken["error"]

    table = run_dp2o("plugins", env=plugin_env)
    assert table.returncode == 0
    assert "dp2o-broken-plugin" in table.stdout and "failed" in table.stdout
    assert run_dp2o("--help", env=plugin_env).returncode == 0
    assert run_dp2o("plugins", "--all", env=plugin_env).returncode == 0


def test_load_plugins_allow_list(plugin_env):
    none = _plugins({**plugin_env, "DP2O_LOAD_PLUGINS": ""})
    assert none["dp2o-example-selector"]["status"] == "disabled"
    assert none["dp2o-example-selector"]["provides"]["selector"] == []
    hidden = run_dp2o("config", "--selector", "median-split", env={**plugin_env, "DP2O_LOAD_PLUGINS": ""})
    assert hidden.returncode == 2
    assert "unknown selector 'median-split'" in hidden.stderr

    only = _plugins({**plugin_env, "DP2O_LOAD_PLUGINS": "dp2o-example-selector"})
    assert only["dp2o-example-selector"]["status"] == "ok"
    assert only["dp2o-broken-plugin"]["status"] == "disabled"


def test_disable_plugins_skips_import(plugin_env):
    plugins = _plugins({**plugin_env, "DP2O_DISABLE_PLUGINS": "broken"})
    assert plugins["dp2o-broken-plugin"]["status"] == "disabled"
    assert plugins["dp2o-broken-plugin"]["error"] == "disabled by DP2O_DISABLE_PLUGINS"
    assert plugins["dp2o-example-selector"]["status"] == "ok"


def test_plugin_errors_raise_shows_the_traceback(plugin_env):
    done = run_dp2o("plugins", env={**plugin_env, "DP2O_PLUGIN_ERRORS": "raise"})
    assert done.returncode != 0
    assert "Traceback" in done.stderr
    assert "dp2o-broken-plugin cannot be imported" in done.stderr


def test_listing_plugins_imports_no_torch_or_numpy(plugin_env):
    code = (
        "import sys\n"
        "from dp2o_cli.app import run\n"
        "status = run(['plugins', '--all', '--json'])\n"
        "assert status == 0, status\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'pyiqa', 'numpy') if m in sys.modules)\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=plugin_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "HEAVY=" in done.stderr
    assert done.stderr.split("HEAVY=")[1] == ""  # not even numpy: listing stays fast


def test_importing_the_core_imports_no_torch():
    code = "import sys, dp2o_core, dp2o_core.config, dp2o_core.specs; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
