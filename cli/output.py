"""Where the CLI writes: rich consoles for people, plain text for machines."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    """``Error: message`` on stderr, the house style for every failure."""
    error_console.print(f"[bold red]Error:[/] {escape(message)}", markup=True, soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine-readable output: indented JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
