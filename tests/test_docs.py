"""The plugin author guide documents every hook with its exact signature."""

from __future__ import annotations

import inspect

from conftest import REPO

from dp2o_core import hookspecs


def test_every_hook_is_documented_with_its_signature():
    guide = (REPO / "docs" / "plugins.md").read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("register_")]
    assert sorted(hooks) == [
        "register_backbones",
        "register_datasets",
        "register_degradations",
        "register_rewards",
        "register_selectors",
        "register_weightings",
    ]
    for name in hooks:
        signature = str(inspect.signature(getattr(hookspecs, name))).replace("'", "")
        assert f"{name}{signature}" in guide, f"{name}{signature} is missing from docs/plugins.md"


def test_every_testing_fixture_is_documented():
    guide = (REPO / "docs" / "plugins.md").read_text()
    for fixture in ("dp2o_plugin_manager", "dp2o_add_plugin", "dp2o_cli"):
        assert f"| `{fixture}` |" in guide
    assert "dp2o_core.testing.check_implementation(cls)" in guide
