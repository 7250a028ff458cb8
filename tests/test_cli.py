"""The CLI in-process: version, plugins listing, config resolution, error style and exit codes."""

from __future__ import annotations

import json
import textwrap

from dp2o_core import PairSelector, hookimpl


def test_version(dp2o_cli):
    result = dp2o_cli("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("dp2o 0.")


def test_help_lists_the_commands(dp2o_cli):
    result = dp2o_cli("--help")
    assert result.exit_code == 0
    assert "plugins" in result.stdout and "config" in result.stdout


def test_plugins_all_lists_builtin_selectors_as_ok(dp2o_cli):
    result = dp2o_cli("plugins", "--all", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    dp2o = next(p for p in data["plugins"] if p["distribution"] == "dp2o")
    assert dp2o["status"] == "ok"
    assert set(dp2o["provides"]["selector"]) == {"ratio", "best-worst"}
    names = {(i["kind"], i["name"]) for i in data["implementations"]}
    assert {("selector", "ratio"), ("selector", "best-worst")} <= names


def test_plugins_json_has_stable_keys(dp2o_cli):
    data = json.loads(dp2o_cli("plugins", "--all", "--json").stdout)
    assert set(data) == {"plugins", "implementations"}
    for plugin in data["plugins"]:
        assert set(plugin) == {
            "distribution",
            "version",
            "origin",
            "entry_point",
            "status",
            "error",
            "provides",
        }
        assert set(plugin["provides"]) == {
            "backbone",
            "reward",
            "selector",
            "weighting",
            "dataset",
            "degradation",
            "prompter",
        }
    for impl in data["implementations"]:
        assert set(impl) == {"kind", "name", "aliases", "summary", "class", "distribution", "options"}
    ratio = next(i for i in data["implementations"] if i["name"] == "ratio")
    assert ratio["options"][0] == {
        "name": "ratio",
        "type": "float",
        "default": 0.25,
        "required": False,
        "description": ratio["options"][0]["description"],
    }
    assert ratio["options"][0]["description"]


def test_plugins_table_shows_builtins_and_options(dp2o_cli):
    result = dp2o_cli("plugins", "--all", "--options", "--kind", "selector")
    assert result.exit_code == 0
    assert "ratio" in result.stdout and "best-worst" in result.stdout
    assert "Share N/M" in result.stdout


def test_plugins_kind_filter_and_bad_kind(dp2o_cli):
    data = json.loads(dp2o_cli("plugins", "--all", "--json", "--kind", "selector").stdout)
    assert {i["kind"] for i in data["implementations"]} == {"selector"}
    result = dp2o_cli("plugins", "--kind", "selectors")
    assert result.exit_code == 2
    assert "Error: unknown plugin kind 'selectors'. Did you mean 'selector'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_in_process_plugin_shows_in_the_cli(dp2o_cli, dp2o_add_plugin):
    class FirstLast(PairSelector):
        """Pairs the first candidate with the last."""

        name = "first-last"

        def select(self, rewards):
            return [(0, len(rewards) - 1)]

    class Plugin:
        @hookimpl
        def register_selectors(self, register):
            register(FirstLast)

    dp2o_add_plugin(Plugin(), name="dp2o-first-last")
    data = json.loads(dp2o_cli("plugins", "--json").stdout)
    assert [p["provides"]["selector"] for p in data["plugins"] if p["distribution"] == "dp2o-first-last"] == [
        ["first-last"]
    ]


def test_config_resolves_file_then_cli_overrides(dp2o_cli, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        textwrap.dedent(
            """
            seed = 7

            [selector]
            name = "ratio"
            ratio = 0.125
            """
        )
    )
    result = dp2o_cli("config", "--config", str(config), "--seed", "9")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["seed"] == 9
    selector = record["components"]["selector"]
    assert selector["name"] == "ratio"
    assert selector["options"] == {"ratio": 0.125, "n": None}
    assert selector["distribution"] == "dp2o"

    result = dp2o_cli("config", "--config", str(config), "--selector", "best-worst")
    assert json.loads(result.stdout)["components"]["selector"]["name"] == "best-worst"


def test_bad_option_value_exits_2_without_traceback(dp2o_cli):
    result = dp2o_cli("config", "--selector", "ratio=0.75")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: invalid options for selector 'ratio': option ratio='0.75'")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_unknown_selector_exits_2_with_suggestion(dp2o_cli):
    result = dp2o_cli("config", "--selector", "best-wrost")
    assert result.exit_code == 2
    assert "unknown selector 'best-wrost'. Did you mean 'best-worst'?" in result.stderr


def test_unknown_cli_flag_is_a_usage_error(dp2o_cli):
    result = dp2o_cli("plugins", "--colour")
    assert result.exit_code == 2
    assert "No such option" in result.stderr


def test_missing_config_file_is_a_usage_error(dp2o_cli, tmp_path):
    result = dp2o_cli("config", "--config", str(tmp_path / "nope.toml"))
    assert result.exit_code == 2
    assert f"cannot read config file {tmp_path / 'nope.toml'}" in result.stderr


def test_plugin_module_flag_loads_an_unpackaged_plugin(dp2o_cli, tmp_path, monkeypatch):
    (tmp_path / "my_dp2o_selectors.py").write_text(
        textwrap.dedent(
            '''
            from dp2o_core import PairSelector, hookimpl

            class LastFirst(PairSelector):
                """Pairs the last candidate over the first."""

                name = "last-first"

                def select(self, rewards):
                    return [(len(rewards) - 1, 0)]

            @hookimpl
            def register_selectors(register):
                register(LastFirst)
            '''
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    result = dp2o_cli("-p", "my_dp2o_selectors", "config", "--selector", "last-first")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["components"]["selector"]["distribution"] == "my_dp2o_selectors"


def test_plugin_module_flag_with_a_missing_module_is_a_usage_error(dp2o_cli):
    result = dp2o_cli("-p", "no_such_dp2o_plugin_module", "plugins")
    assert result.exit_code == 2
    assert "could not import plugin module 'no_such_dp2o_plugin_module' given with -p" in result.stderr


def test_plugin_module_whose_own_import_fails_names_the_missing_package(dp2o_cli, tmp_path, monkeypatch):
    (tmp_path / "needs_a_package.py").write_text("import dp2o_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = dp2o_cli("-p", "needs_a_package", "plugins")
    assert result.exit_code == 2
    assert "it imports 'dp2o_no_such_dependency', which is not installed" in result.stderr
    assert "pip install dp2o_no_such_dependency" in result.stderr
    assert "PYTHONPATH" not in result.stderr  # the module itself was found


def test_error_text_in_square_brackets_is_printed(dp2o_cli):
    """rich markup used to swallow bracketed text ('[niqe]') in messages that quote the user's input."""
    result = dp2o_cli("config", "--selector", "ratio:ratio=[0.1,0.2]")
    assert result.exit_code == 2
    assert "option ratio=['0.1', '0.2']" in result.stderr


def test_cli_functions_stay_thin():
    """The pipeline lives in dp2o_core.pipeline; a command parses flags and prints."""
    import ast

    from conftest import REPO

    longest = []
    for path in sorted((REPO / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef):
                longest.append((node.end_lineno - node.lineno + 1, f"{path.name}:{node.name}"))
    too_long = [f"{name} ({lines} lines)" for lines, name in longest if lines > 70]
    assert not too_long, "CLI functions over 70 lines: " + ", ".join(too_long)


def test_the_rate_and_time_left_a_bar_shows_are_what_happened():
    """16 candidates in 109 s are 0.15/s, even when the last groups of a packed call arrive
    together (rich's own speed, from the last few updates, read 91/s there)."""
    from types import SimpleNamespace

    from dp2o_cli.progress import RateColumn, RemainingColumn

    task = SimpleNamespace(completed=16, total=32, elapsed=109.0, speed=91.12, finished_speed=None)
    assert str(RateColumn().render(task)) == "0.15/s"
    assert str(RemainingColumn().render(task)) == "0:01:49"
    assert str(RateColumn().render(SimpleNamespace(completed=0, total=4, elapsed=3.0))) == "-/s"


def test_the_eval_bar_counts_what_it_does():
    from dp2o_core.evaluation import progress_unit

    assert progress_unit(1, 1) == "inputs"
    assert progress_unit(2, 1) == "input × model"  # 2 inputs, base and compared: 4 of these
    assert progress_unit(2, 3) == "input × model × seed set"
