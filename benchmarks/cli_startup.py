"""Whole-process start-up time of the dp2o CLI (median of several runs).

Compares ``dp2o --help``, ``dp2o plugins`` and ``dp2o plugins --json`` with a bare
``python -c pass`` — the floor any Python CLI pays — and with ``python -c "import torch"``,
what a CLI that imported torch at start-up would pay. Run from an environment where dp2o
is installed::

    python benchmarks/cli_startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def median_seconds(command: list[str], runs: int) -> float:
    """Median wall time of ``runs`` executions of ``command`` (after one warm-up run)."""
    subprocess.run(command, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per command")
    args = parser.parse_args()
    dp2o = str(Path(sys.executable).with_name("dp2o"))
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "dp2o --help": [dp2o, "--help"],
        "dp2o plugins": [dp2o, "plugins"],
        "dp2o plugins --all --json": [dp2o, "plugins", "--all", "--json"],
    }
    results = {name: median_seconds(cmd, args.runs) for name, cmd in commands.items()}
    floor, torch = results["python -c pass"], results["python -c 'import torch'"]
    print(f"{'command':<28} {'median s':>9} {'× python':>9} {'÷ torch import':>15}")
    for name, seconds in results.items():
        print(f"{name:<28} {seconds:9.3f} {seconds / floor:9.1f} {seconds / torch:15.2f}")


if __name__ == "__main__":
    main()
