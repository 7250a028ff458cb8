"""The root ``dp2o`` command: global options, subcommand registration, error handling."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from dp2o_cli import (
    check_cmd,
    config_cmd,
    eval_cmd,
    export_cmd,
    pairs_cmd,
    plugins_cmd,
    prepare_cmd,
    report_cmd,
    sample_cmd,
    score_cmd,
    status_cmd,
    train_cmd,
    upscale_cmd,
)
from dp2o_cli.output import print_error
from dp2o_cli.state import CliState

from dp2o_core.errors import Dp2oError, explain_os_error
from dp2o_core.registry import dp2o_version

app = typer.Typer(
    name="dp2o",
    help="Preference-tune super-resolution generators with DP²O-SR.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
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


app.command("plugins")(plugins_cmd.plugins)
app.command("config")(config_cmd.config)
app.command("prepare")(prepare_cmd.prepare)
app.command("sample")(sample_cmd.sample)
app.command("upscale")(upscale_cmd.upscale)
app.command("score")(score_cmd.score)
app.command("pairs")(pairs_cmd.pairs)
app.command("status")(status_cmd.status)
app.command("train")(train_cmd.train)
app.command("check")(check_cmd.check)
app.command("eval")(eval_cmd.eval_command)
app.command("export")(export_cmd.export)
app.command("report")(report_cmd.report)


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
