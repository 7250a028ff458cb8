"""Spec strings: grammar, lookup by name or alias, option validation and its messages."""

from __future__ import annotations

import pytest

from dp2o_core import PairSelector, PluginOptions, hookimpl
from dp2o_core.errors import UnknownNameError, UsageError
from dp2o_core.registry import PluginManager
from dp2o_core.specs import Spec, parse_spec, resolve_spec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("flux", Spec("flux")),
        ("ratio=0.25", Spec(None, {"ratio": "0.25"})),
        ("hybrid:balance=0.7", Spec("hybrid", {"balance": "0.7"})),
        ("ratio:n=4,", Spec("ratio", {"n": "4"})),
        ("sd2:chunk-size=4", Spec("sd2", {"chunk_size": "4"})),
        (
            "hybrid:fr=[lpips, topiq_fr],nr=[maniqa]",
            Spec("hybrid", {"fr": ["lpips", "topiq_fr"], "nr": ["maniqa"]}),
        ),
        ('sd2:prompt="a cat, sharp: 4k"', Spec("sd2", {"prompt": "a cat, sharp: 4k"})),
        ("  ratio  ", Spec("ratio")),
    ],
)
def test_parse_spec_grammar(text, expected):
    assert parse_spec(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty selector spec"),
        (":n=2", "nothing before ':'"),
        ("ratio:n", "'n' is not KEY=VALUE"),
        ("ratio:n=1,n=2", "option 'n' given twice"),
        ("ratio:fr=[a", "unbalanced brackets"),
    ],
)
def test_bad_spec_syntax_names_the_problem(text, message):
    with pytest.raises(UsageError, match=message):
        parse_spec(text, "selector")


def test_spec_round_trips_through_str():
    spec = Spec("hybrid", {"fr": ["lpips", "topiq_fr"], "prompt": "a, b"})
    assert parse_spec(str(spec)) == spec


def test_options_only_spec_uses_the_default_implementation(dp2o_plugin_manager):
    resolved = resolve_spec(dp2o_plugin_manager, "selector", "ratio=0.125", default="ratio")
    assert resolved.registration.name == "ratio"
    assert resolved.options.ratio == 0.125


def test_unknown_name_suggests_the_close_match_and_lists_all():
    with pytest.raises(UnknownNameError) as error:
        resolve_spec(PluginManager(entry_points=False), "selector", "ratoi")
    message = str(error.value)
    assert "unknown selector 'ratoi'" in message
    assert "Did you mean 'ratio'?" in message
    assert "Available: best-worst, ratio." in message
    assert error.value.exit_code == 2


def test_unknown_option_suggests_the_close_match(dp2o_plugin_manager):
    with pytest.raises(UnknownNameError) as error:
        resolve_spec(dp2o_plugin_manager, "selector", "ratio:rato=0.3")
    message = str(error.value)
    assert "unknown option for selector 'ratio': 'rato'" in message
    assert "Did you mean 'ratio'?" in message
    assert "Available: n, ratio." in message


def test_bad_value_says_which_option_what_was_given_and_what_is_allowed(dp2o_plugin_manager):
    with pytest.raises(UsageError) as error:
        resolve_spec(dp2o_plugin_manager, "selector", "ratio:ratio=0.9")
    message = str(error.value)
    assert "selector 'ratio'" in message
    assert "ratio='0.9'" in message
    assert "less than or equal to 0.5" in message
    assert "expects float" in message


def test_aliases_resolve_to_their_implementation(dp2o_add_plugin):
    class ShortSelector(PairSelector):
        """Best against worst, registered under a long name with an alias."""

        name = "best-against-worst"

        class Options(PluginOptions):
            pass

        def select(self, rewards):
            return [
                (
                    max(range(len(rewards)), key=rewards.__getitem__),
                    min(range(len(rewards)), key=rewards.__getitem__),
                )
            ]

    class Plugin:
        @hookimpl
        def register_selectors(self, register):
            register(ShortSelector, aliases=("baw",))

    manager = dp2o_add_plugin(Plugin())
    resolved = resolve_spec(manager, "selector", "baw")
    assert resolved.registration.cls is ShortSelector
    assert resolved.build().select([0.1, 0.5, 0.2]) == [(1, 0)]
    assert "baw" not in manager.implementations("selector")
    assert manager.implementations("selector")["best-against-worst"].aliases == ("baw",)


def test_merging_specs_follows_cli_over_config_rules():
    configured = Spec("ratio", {"ratio": "0.25"})
    assert Spec(None, {"n": "2"}).merged_over(configured) == Spec("ratio", {"ratio": "0.25", "n": "2"})
    assert Spec("ratio", {"ratio": "0.5"}).merged_over(configured) == Spec("ratio", {"ratio": "0.5"})
    assert Spec("best-worst").merged_over(configured) == Spec("best-worst")


def test_a_later_layer_giving_an_alternative_replaces_the_earlier_one(dp2o_plugin_manager):
    embedded = parse_spec("ratio:ratio=0.25", "selector")
    by_count = parse_spec("n=1", "selector").merged_over(embedded)  # dp2o train --selector n=1
    assert resolve_spec(dp2o_plugin_manager, "selector", by_count).build().group_size(16) == 1
    back = parse_spec("ratio=0.5", "selector").merged_over(by_count)  # and a third layer goes back
    assert resolve_spec(dp2o_plugin_manager, "selector", back).build().group_size(16) == 8
    with pytest.raises(UsageError, match="give either ratio or n, not both"):  # one spec giving both
        resolve_spec(
            dp2o_plugin_manager, "selector", parse_spec("n=1,ratio=0.5", "selector").merged_over(embedded)
        )
