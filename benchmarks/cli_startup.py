"""Whole-process start-up time of the dp2o CLI against what it cannot avoid paying.

The baseline is a process that imports the four libraries the CLI is built on — typer,
rich, pydantic and pluggy — and nothing else; the goal is ``dp2o --help`` and ``dp2o
plugins`` within 2× of it. ``python -c pass`` (the floor of any Python process) and
``python -c "import torch"`` (what a CLI that imported torch at start-up would pay) are
shown for scale, and so is the floor of any typer command with options: a one-command typer
app with ``dp2o plugins``' four options that prints one line with rich. Typer (0.29) builds a
pydantic ``TypeAdapter`` for every option it parses, which imports most of pydantic — a cost
the import baseline does not include and no typer command with options avoids.

``dp2o plugins`` reads the built-in plugins from dp2o's registry cache (written by the
first run; the warm-up round below makes sure it exists); ``registry cache off``
(``DP2O_REGISTRY_CACHE=0``) imports them as every run did before the cache.

The commands run interleaved — round k runs each once, in an order that
rotates with k — so that a change in the machine's load reaches every command alike; each
ratio is the median over rounds of that round's ratio, with its spread (min–max). Run from
an environment where dp2o is installed::

    python benchmarks/cli_startup.py [--runs 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BASELINE = "import typer, rich, pydantic, pluggy"
TYPER_FLOOR = """
from typing import Annotated
import typer
from rich.console import Console

def plugins(
    all_: Annotated[bool, typer.Option("--all")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    kind: Annotated[str | None, typer.Option("--kind")] = None,
    options: Annotated[bool, typer.Option("--options")] = False,
) -> None:
    Console().print("one line")

typer.run(plugins)
"""


def seconds(command: list[str]) -> float:
    """Wall time of one run of ``command`` (which must succeed); a first item ``KEY=VALUE``
    is set in its environment."""
    env = dict(os.environ)
    if "=" in command[0]:
        key, _, value = command[0].partition("=")
        env[key], command = value, command[1:]
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=9, help="interleaved rounds (each command once per round)"
    )
    args = parser.parse_args()
    dp2o = str(Path(sys.executable).with_name("dp2o"))
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        BASELINE: [sys.executable, "-c", BASELINE],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "typer command, 4 options (floor)": [sys.executable, "-c", TYPER_FLOOR],
        "dp2o --help": [dp2o, "--help"],
        "dp2o plugins": [dp2o, "plugins"],
        "dp2o plugins, registry cache off": ["DP2O_REGISTRY_CACHE=0", dp2o, "plugins"],
        "dp2o plugins --all --json": [dp2o, "plugins", "--all", "--json"],
    }
    names = list(commands)
    for name in names:  # warm the file cache once
        seconds(commands[name])
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(args.runs):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(seconds(commands[name]))
    print(f"{'command':<38} {'median s':>9} {'÷ baseline (median, min–max over rounds)':>42}")
    for name in names:
        ratios = [t / b for t, b in zip(times[name], times[BASELINE], strict=True)]
        spread = f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"
        print(f"{name:<38} {statistics.median(times[name]):9.3f} {spread:>42}")
    print(
        f"baseline: python -c '{BASELINE}'; {args.runs} interleaved rounds; "
        "goal for dp2o --help and dp2o plugins: ≤ 2×"
    )


if __name__ == "__main__":
    main()
