"""The root ``dp2o`` command: global options, subcommand registration, error handling."""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any

import typer
from dp2o_cli.output import print_error
from dp2o_cli.state import CliState
from typer.core import TyperCommand, TyperGroup

from dp2o_core.errors import Dp2oError, explain_os_error

#: Every subcommand: name → (``module:function``, its one-line help). A command's module (and
#: with it pydantic, torch and the pipeline) is imported only when that command runs, so that
#: ``dp2o --help`` starts in the time of its libraries; tests/test_cli_startup.py checks that each
#: line here is the first line of the function's docstring.
COMMANDS: dict[str, tuple[str, str]] = {
    "plugins": (
        "dp2o_cli.plugins_cmd:plugins",
        "List plugins: distribution, version, what they provide and whether they loaded.",
    ),
    "config": (
        "dp2o_cli.config_cmd:config",
        "Print the resolved configuration (every option's final value, plugin versions) as JSON.",
    ),
    "prepare": (
        "dp2o_cli.prepare_cmd:prepare",
        "Load the data set into RUN: LR inputs (degraded from HR where needed) and HR references.",
    ),
    "pretrain": (
        "dp2o_cli.pretrain_cmd:pretrain",
        "Build the SR generator to tune: train the backbone on HR crops degraded afresh every step.",
    ),
    "sample": (
        "dp2o_cli.sample_cmd:sample",
        "Sample M candidates per LR input of RUN (runs the data stage first when --data is given).",
    ),
    "upscale": (
        "dp2o_cli.upscale_cmd:upscale",
        "Super-resolve INPUT (a file or a folder) with a backbone; several candidates get _m suffixes.",
    ),
    "score": (
        "dp2o_cli.score_cmd:score",
        "Score every candidate in RUN with every metric the reward needs (sharded under accelerate).",
    ),
    "pairs": (
        "dp2o_cli.pairs_cmd:pairs",
        "Compute rewards, pairs and weights for RUN from its raw scores (no rescoring).",
    ),
    "status": (
        "dp2o_cli.status_cmd:status",
        "Show each stage of RUN: done, partial, stale, damaged or missing, with counts and fingerprints.",
    ),
    "train": (
        "dp2o_cli.train_cmd:train",
        "Run sample → score → pairs → train → eval, skipping what is current and continuing what is partial.",
    ),
    "check": (
        "dp2o_cli.check_cmd:check",
        "List what dp2o train needs with the same flags: present, downloaded on first use, or missing.",
    ),
    "eval": (
        "dp2o_cli.eval_cmd:eval_command",
        "Sample M outputs per input with each backbone and report metrics and Best/Mean/Worst@M.",
    ),
    "export": (
        "dp2o_cli.export_cmd:export",
        "Write RUN's pairs to OUT (jpg_0, jpg_1, label_0, caption, lr, group_id, weight, …).",
    ),
    "report": (
        "dp2o_cli.report_cmd:report",
        "Write RUN/report.html: configuration, stage times, rewards, pairs, training curves, evaluation.",
    ),
}


def load_command(name: str) -> typer.core.TyperCommand:
    """The full click command of subcommand ``name``, built from its function (imports its module)."""
    target, _ = COMMANDS[name]
    module_name, function_name = target.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(name)(function)
    command = typer.main.get_command(single)
    assert isinstance(command, TyperCommand)
    return command


class DeferredCommand(TyperCommand):
    """A subcommand known by name and help only; the real one is built when it is invoked."""

    def __init__(self, name: str, short_help: str) -> None:
        super().__init__(name, short_help=short_help, help=short_help)

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        """Build the real command and parse ``args`` with it (its options, its ``--help``)."""
        assert self.name is not None
        return load_command(self.name).make_context(info_name, args, parent=parent, **extra)


class LazyCommands(TyperGroup):
    """The root group: every subcommand deferred, listed in :data:`COMMANDS` order."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for name, (_, short_help) in COMMANDS.items():
            self.commands[name] = DeferredCommand(name, short_help)


app = typer.Typer(
    name="dp2o",
    help="Preference-tune super-resolution generators with DP²O-SR.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=LazyCommands,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from dp2o_core.registry import dp2o_version

        typer.echo(f"dp2o {dp2o_version()}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    plugin: Annotated[
        list[str] | None,
        typer.Option(
            "-p",
            "--plugin",
            metavar="MODULE",
            help="Load a plugin from an importable module that is not packaged (repeatable).",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Preference-tune super-resolution generators with DP²O-SR."""
    ctx.obj = CliState(plugin_modules=list(plugin or []))


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit status; dp2o errors become ``Error: …`` lines.

    Typer reports its own usage errors (unknown flag, missing argument) with status 2;
    :class:`Dp2oError` carries its status (2 for usage errors, 1 for failures).
    """
    try:
        app(args=argv, prog_name="dp2o")
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print_error(str(done.code))
        return 1
    except Dp2oError as error:
        print_error(str(error))
        return error.exit_code
    except OSError as error:  # a full disk, a read-only run, a path that is a file
        if error.errno is None:
            raise
        print_error(explain_os_error(error))
        return 1
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
