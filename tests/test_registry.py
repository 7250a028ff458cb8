"""The plugin manager: guarded loading, conflicts, malformed plugins, environment switches."""

from __future__ import annotations

import pytest

from dp2o_core import PairSelector, PluginOptions, hookimpl
from dp2o_core.errors import PluginError, UnknownNameError
from dp2o_core.registry import KINDS, PluginManager
from dp2o_core.testing import check_implementation


class TopSelector(PairSelector):
    """Pairs the best candidate with every other."""

    name = "top"

    def select(self, rewards):
        best = max(range(len(rewards)), key=lambda i: (rewards[i], -i))
        return [(best, i) for i in range(len(rewards)) if i != best]


class SelectorPlugin:
    @hookimpl
    def register_selectors(self, register):
        register(TopSelector)


def test_every_builtin_passes_the_contract(dp2o_plugin_manager):
    builtins = [
        reg
        for kind in KINDS
        for reg in dp2o_plugin_manager.implementations(kind).values()
        if reg.source.origin == "builtin"
    ]
    assert {reg.name for reg in builtins} >= {"ratio", "best-worst"}
    for reg in builtins:
        check_implementation(reg.cls, reg.aliases)


def test_builtins_are_listed_with_the_dp2o_distribution(dp2o_plugin_manager):
    reg = dp2o_plugin_manager.lookup("selector", "ratio")
    assert reg.source.distribution == "dp2o"
    assert reg.source.status == "ok"
    assert dp2o_plugin_manager.selector("best-worst").name == "best-worst"


def test_in_process_plugin_is_usable_and_removed_after_the_test(dp2o_add_plugin):
    manager = dp2o_add_plugin(SelectorPlugin(), name="top-plugin")
    assert manager.selector("top") is TopSelector
    assert manager.lookup("selector", "top").source.distribution == "top-plugin"


def test_throwaway_plugin_from_previous_test_is_gone():
    with pytest.raises(UnknownNameError):
        PluginManager().lookup("selector", "top")


def test_same_name_from_two_plugins_is_an_error_naming_both(dp2o_add_plugin):
    class OtherTop(TopSelector):
        """Another selector that claims the name 'top'."""

    class Clashing:
        @hookimpl
        def register_selectors(self, register):
            register(OtherTop)

    dp2o_add_plugin(SelectorPlugin(), name="dp2o-top")
    manager = dp2o_add_plugin(Clashing(), name="dp2o-other-top")
    with pytest.raises(PluginError) as error:
        manager.lookup("selector", "top")
    assert "dp2o-top" in str(error.value) and "dp2o-other-top" in str(error.value)
    statuses = {s.distribution: s.status for s in manager.sources()}
    assert statuses["dp2o-other-top"] == "conflict"
    assert manager.selector("ratio").name == "ratio"  # everything else still works


def test_conflicts_raise_immediately_when_asked(dp2o_add_plugin, monkeypatch):
    class Clash(PairSelector):
        """Claims the built-in name 'ratio'."""

        name = "ratio"

        def select(self, rewards):
            return []

    class Plugin:
        @hookimpl
        def register_selectors(self, register):
            register(Clash)

    dp2o_add_plugin(Plugin(), name="dp2o-clash")
    monkeypatch.setenv("DP2O_PLUGIN_ERRORS", "raise")
    with pytest.raises(PluginError, match=r"provided by both dp2o .* and dp2o-clash"):
        PluginManager(entry_points=False)


def test_plugin_whose_hook_raises_is_failed_and_others_keep_working(dp2o_add_plugin):
    class Exploding:
        @hookimpl
        def register_selectors(self, register):
            raise ImportError("needs a package that is not installed")

    manager = dp2o_add_plugin(Exploding(), name="dp2o-exploding")
    source = next(s for s in manager.sources() if s.distribution == "dp2o-exploding")
    assert source.status == "failed"
    assert "ImportError: needs a package that is not installed" in source.error
    assert manager.selector("ratio").name == "ratio"


def test_malformed_class_fails_its_plugin_with_every_reason(dp2o_add_plugin):
    class BadOptions(PluginOptions):
        k: int = 1

    class Bad(PairSelector):
        name = "Bad_Name"
        Options = BadOptions

    class Plugin:
        @hookimpl
        def register_selectors(self, register):
            register(Bad)

    manager = dp2o_add_plugin(Plugin(), name="dp2o-bad")
    error = next(s for s in manager.sources() if s.distribution == "dp2o-bad").error
    assert "not kebab-case" in error
    assert "no docstring" in error
    assert "does not implement select" in error
    assert "without a description: k" in error


def test_registering_an_instance_or_wrong_kind_fails_the_plugin(dp2o_add_plugin):
    class Plugin:
        @hookimpl
        def register_rewards(self, register):
            register(TopSelector)

    manager = dp2o_add_plugin(Plugin(), name="dp2o-wrong-kind")
    error = next(s for s in manager.sources() if s.distribution == "dp2o-wrong-kind").error
    assert "is not a subclass of RewardModel" in error


def test_unknown_hook_fails_the_plugin(dp2o_add_plugin):
    class Plugin:
        @hookimpl
        def register_samplers(self, register):
            pass

    manager = dp2o_add_plugin(Plugin(), name="dp2o-unknown-hook")
    source = next(s for s in manager.sources() if s.distribution == "dp2o-unknown-hook")
    assert source.status == "failed"
    assert "unknown hooks: register_samplers" in source.error


def test_errors_reraise_with_traceback_when_asked(dp2o_add_plugin, monkeypatch):
    class Exploding:
        @hookimpl
        def register_selectors(self, register):
            raise ZeroDivisionError("boom")

    dp2o_add_plugin(Exploding(), name="dp2o-exploding")
    monkeypatch.setenv("DP2O_PLUGIN_ERRORS", "raise")
    with pytest.raises(ZeroDivisionError, match="boom"):
        PluginManager(entry_points=False)


def test_unknown_kind_is_a_usage_error(dp2o_plugin_manager):
    with pytest.raises(UnknownNameError, match="Did you mean 'selector'"):
        dp2o_plugin_manager.implementations("selectr")


def test_contract_check_reports_problems():
    class NoDoc(PairSelector):
        name = "no-doc"

        def select(self, rewards):
            return []

    with pytest.raises(AssertionError, match="no docstring"):
        check_implementation(NoDoc)
    check_implementation(TopSelector)
