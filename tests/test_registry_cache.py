"""dp2o's built-in plugins come from the registry cache without importing them, and the
cache never serves what the installed code no longer has."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dp2o_core import registry_cache
from dp2o_core.errors import PluginError
from dp2o_core.registry import PluginManager

LISTING = (
    "import sys\n"
    "from dp2o_cli.app import run\n"
    "status = run(['plugins', '--all', '--json'])\n"
    "heavy = {m.split('.')[0] for m in sys.modules if m.startswith(('dp2o_plugins.', 'torch'))}\n"
    "print(status, sorted(heavy))\n"
)


def _listing(env: dict[str, str]) -> tuple[str, str]:
    """``dp2o plugins --all --json`` in a fresh process: its JSON, and which top-level
    packages of the built-in plugins and torch it imported."""
    result = subprocess.run(
        [sys.executable, "-c", LISTING], capture_output=True, text=True, env=env, check=True
    )
    *json_lines, last = result.stdout.strip().splitlines()
    return "\n".join(json_lines), last


def test_a_second_listing_imports_no_builtin_plugin_and_says_the_same(tmp_path):
    env = {**os.environ, "DP2O_CACHE": str(tmp_path / "cache")}
    first, first_imports = _listing(env)
    assert first_imports == "0 ['dp2o_plugins']"  # the first run imports them and writes the cache
    assert list((tmp_path / "cache" / "registry").glob("builtins-*.json"))
    second, second_imports = _listing(env)
    assert second_imports == "0 []"
    uncached, _ = _listing({**env, "DP2O_REGISTRY_CACHE": "0"})
    assert second == first == uncached
    assert "tiny-sr" in second and "median-split" in second  # built-ins and the third-party plugin


def test_a_cached_registration_imports_its_class_when_used(tmp_path, monkeypatch):
    from dp2o_plugins.selectors.ratio import RatioSelector

    monkeypatch.setenv("DP2O_CACHE", str(tmp_path))
    PluginManager(entry_points=False)  # writes the cache
    cached = PluginManager(entry_points=False)
    registration = cached.lookup("selector", "ratio")
    assert not registration._loaded  # known by name, summary and class path only
    assert registration.summary == RatioSelector.__doc__.strip().splitlines()[0]
    assert registration.cls is RatioSelector
    assert cached.lookup("backbone", "sd2").name == "sd2-controlnet"  # aliases come back too


def test_another_key_or_a_damaged_file_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("DP2O_CACHE", str(tmp_path))
    monkeypatch.setattr(registry_cache, "_key", lambda: "edited-checkout")
    PluginManager(entry_points=False)
    path = registry_cache.cache_file()
    assert path.name == "builtins-edited-checkout.json"
    path.write_text("{not json", encoding="utf-8")
    manager = PluginManager(entry_points=False)  # unreadable: imports the built-ins and rewrites it
    assert "ratio" in manager.implementations("selector")
    assert json.loads(path.read_text(encoding="utf-8"))["registrations"]


def test_a_cached_class_that_is_gone_is_named_with_the_cache_to_delete(tmp_path, monkeypatch):
    monkeypatch.setenv("DP2O_CACHE", str(tmp_path))
    PluginManager(entry_points=False)
    path = registry_cache.cache_file()
    data = json.loads(path.read_text(encoding="utf-8"))
    for record in data["registrations"]:
        if record["name"] == "ratio":
            record["class"] = "dp2o_plugins.selectors.ratio:NoSuchSelector"
    path.write_text(json.dumps(data), encoding="utf-8")
    registration = PluginManager(entry_points=False).lookup("selector", "ratio")
    with pytest.raises(
        PluginError, match=r"selector 'ratio' of dp2o .*cannot be imported.*delete .*registry"
    ):
        _ = registration.cls
