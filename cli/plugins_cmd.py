"""``dp2o plugins``: what is installed, what each plugin provides, and whether it loaded."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from dp2o_cli.output import console, print_json
from dp2o_cli.state import CliState
from rich.table import Table

from dp2o_core.errors import UnknownNameError
from dp2o_core.options import describe_options
from dp2o_core.registry import KINDS, PluginManager, PluginSource, Registration

STATUS_STYLE = {"ok": "green", "failed": "red", "disabled": "yellow", "conflict": "red"}


def plugins(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Include dp2o's built-in implementations.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON with stable keys, not a table.")
    ] = False,
    kind: Annotated[
        str | None, typer.Option("--kind", metavar="KIND", help=f"Only this kind: {', '.join(KINDS)}.")
    ] = None,
    options: Annotated[bool, typer.Option("--options", help="List each implementation's options.")] = False,
) -> None:
    """List plugins: distribution, version, what they provide and whether they loaded."""
    if kind is not None and kind not in KINDS:
        raise UnknownNameError("plugin kind", kind, KINDS)
    manager: PluginManager = ctx.ensure_object(CliState).manager
    sources = [s for s in manager.sources() if all_ or s.origin != "builtin"]
    if kind is not None:
        sources = [s for s in sources if s.provides[kind] or s.status != "ok"]
    registrations = [
        reg
        for k in ([kind] if kind else KINDS)
        for reg in manager.implementations(k).values()
        if reg.source in sources
    ]
    if as_json:
        print_json(
            {
                "plugins": [_source_record(s, kind) for s in sources],
                "implementations": [_registration_record(r) for r in registrations],
            }
        )
        return
    if not sources:
        console.print("No third-party dp2o plugins are installed. Use --all to include the built-ins.")
        return
    console.print(_sources_table(sources, kind))
    if options:
        for registration in registrations:
            console.print(_options_table(registration))


def _source_record(source: PluginSource, kind: str | None) -> dict[str, Any]:
    kinds = [kind] if kind else list(KINDS)
    return {
        "distribution": source.distribution,
        "version": source.version,
        "origin": source.origin,
        "entry_point": source.key,
        "status": source.status,
        "error": source.error,
        "provides": {k: list(source.provides[k]) for k in kinds},
    }


def _registration_record(registration: Registration) -> dict[str, Any]:
    return {
        "kind": registration.kind,
        "name": registration.name,
        "aliases": list(registration.aliases),
        "summary": registration.summary,
        "class": registration.class_path.replace(":", "."),
        "distribution": registration.source.distribution,
        "options": registration.described_options(),
    }


def _sources_table(sources: list[PluginSource], kind: str | None) -> Table:
    table = Table(title="dp2o plugins", title_justify="left")
    table.add_column("Distribution", style="bold")
    table.add_column("Version")
    table.add_column("Provides")
    table.add_column("Status")
    for source in sources:
        provides = "\n".join(
            f"{k}: {', '.join(names)}"
            for k, names in source.provides.items()
            if names and (kind is None or k == kind)
        )
        style = STATUS_STYLE[source.status]
        status = f"[{style}]{source.status}[/]"
        if source.error:
            status += f"\n{_escape(source.error)}"
        table.add_row(_escape(source.distribution), _escape(source.version or "-"), provides or "-", status)
    return table


#: What the options table says about an option's declared role (docs/plugins.md).
ROLE_NOTES = {"runtime": "runtime: changes no result", "training": "training only: no resampling"}


def _options_table(registration: Registration) -> Table:
    aliases = f" (alias {', '.join(registration.aliases)})" if registration.aliases else ""
    table = Table(
        title=f"{registration.kind} [bold]{registration.name}[/]{aliases} — {_escape(registration.summary)}",
        title_justify="left",
    )
    table.add_column("Option", style="bold")
    table.add_column("Type")
    table.add_column("Default")
    table.add_column("Description")
    records = describe_options(registration.cls.Options)
    for record in records:
        default = "(required)" if record["required"] else repr(record["default"])
        role = f" ({ROLE_NOTES[record['role']]})" if record.get("role") else ""
        table.add_row(
            record["name"], _escape(record["type"]), _escape(default), _escape(record["description"] + role)
        )
    if not records:
        table.add_row("-", "", "", "no options")
    return table


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
