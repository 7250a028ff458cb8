"""The CLI starts without importing what only a command needs, and lists every command truly."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest
from dp2o_cli.app import COMMANDS, load_command, run

#: Modules that ``dp2o --help`` must not import: they are what made start-up slow.
HEAVY = (
    "torch",
    "numpy",
    "pydantic.main",
    "dp2o_core.interfaces",
    "dp2o_core.pipeline",
    "dp2o_cli.train_cmd",
)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_listed_help_is_the_commands_own_first_docstring_line(name):
    target, listed = COMMANDS[name]
    module_name, function_name = target.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    assert listed == inspect.getdoc(function).splitlines()[0]
    assert load_command(name).name == name


def test_help_imports_no_command_module():
    code = (
        "import sys\n"
        "from dp2o_cli.app import run\n"
        "status = run(['--help'])\n"
        f"print(status, [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "0 []"
    for name in COMMANDS:  # every command is still listed
        assert f" {name} " in result.stdout


def test_a_deferred_command_parses_its_own_options(capsys):
    assert run(["plugins", "--kind", "selector", "--all", "--json"]) == 0
    assert '"kind": "selector"' in capsys.readouterr().out
    assert run(["plugins", "--no-such-flag"]) == 2
    assert "No such option" in capsys.readouterr().err
    assert run(["trian"]) == 2
    assert "Did you mean 'train'" in capsys.readouterr().err
