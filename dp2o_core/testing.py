"""Test helpers for plugin authors, loaded by pytest automatically once dp2o is installed.

Fixtures:

``dp2o_plugin_manager``
    A fresh :class:`~dp2o_core.registry.PluginManager` with the built-ins and the
    installed plugins, independent of any other test.

``dp2o_add_plugin``
    ``dp2o_add_plugin(plugin, name="throwaway")`` registers an object or module with
    ``@hookimpl`` functions for the duration of the test. Every plugin manager created
    meanwhile — including the one the CLI builds — sees it; it returns that fixture's
    manager so the plugin can be looked up at once.

``dp2o_cli``
    ``dp2o_cli("plugins", "--json")`` runs the CLI in-process (rich output 200 columns
    wide) and returns a :class:`CliResult` with ``exit_code``, ``stdout`` and ``stderr``.

Contract check:

``check_implementation(cls)``
    Fails with every problem found: name syntax, docstring, abstract methods left,
    ``Options`` not a :class:`~dp2o_core.PluginOptions`, options without a description,
    ``Options()`` failing with its defaults (when no option is required), option roles
    other than ``runtime``/``training``; for a backbone also ``scale``, ``stochastic`` and a
    ``prepare_training`` left at the default (docs/backbones.md). Run it on each
    class a plugin registers::

        from dp2o_core.testing import check_implementation
        from my_plugin import MySelector

        def test_contract():
            check_implementation(MySelector)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from dp2o_core import registry
from dp2o_core.validation import implementation_problems


def check_implementation(cls: type, aliases: tuple[str, ...] = ()) -> None:
    """Assert that ``cls`` fulfils the contract of its kind (``cls.kind``)."""
    kind = getattr(cls, "kind", "")
    assert kind in registry.KINDS, f"{cls!r} does not subclass one of dp2o's interfaces"
    problems = implementation_problems(cls, kind, aliases, strict=True)
    assert not problems, f"{cls.__qualname__} breaks the {kind} contract:\n- " + "\n- ".join(problems)


@dataclass
class CliResult:
    """Outcome of one in-process CLI run."""

    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def dp2o_plugin_manager() -> registry.PluginManager:
    """A fresh plugin manager: built-ins, installed entry points, in-process plugins."""
    return registry.PluginManager()


@pytest.fixture
def dp2o_add_plugin() -> Iterator[Callable[..., registry.PluginManager]]:
    """Register a throwaway plugin for this test; returns a manager that includes it."""
    added: list[tuple[str, object]] = []

    def add(plugin: object, name: str = "throwaway") -> registry.PluginManager:
        entry = (name, plugin)
        registry.IN_PROCESS_PLUGINS.append(entry)
        added.append(entry)
        return registry.PluginManager()

    yield add
    for entry in added:
        registry.IN_PROCESS_PLUGINS.remove(entry)


@pytest.fixture
def dp2o_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``dp2o ARGS…`` in-process and capture its exit status and output."""
    from dp2o_cli import output
    from dp2o_cli.app import run

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        widths = output.console.width, output.error_console.width
        output.console.width = output.error_console.width = 200  # no wrapping inside asserted text
        try:
            code = run(list(args))
        finally:
            output.console.width, output.error_console.width = widths
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke
