"""Timing two ways of doing the same work so that a shared, noisy machine reads the same.

Round k runs every way once, in an order that rotates with k, so that a change in the
machine's load lands on every way alike; a ratio is taken within each round and the median
over rounds is reported with its spread (min–max). One run of each way, one after the other,
swung from 2.6× to 1.0× under load; the median of interleaved rounds does not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Ratio:
    """Per-round ratios of one way's time to another's: median and spread."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, numerators: list[float], denominators: list[float]) -> Ratio:
        ratios = [n / d for n, d in zip(numerators, denominators, strict=True)]
        return cls(statistics.median(ratios), min(ratios), max(ratios))

    def __str__(self) -> str:
        return f"{self.median:.2f}× ({self.low:.2f}–{self.high:.2f})"

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high}


def interleaved(
    ways: Mapping[str, Callable[[], Any]], rounds: int, warmup: bool = True
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Seconds of each way per round (rotating order) and each way's last result."""
    names = list(ways)
    results: dict[str, Any] = {}
    if warmup:
        for name in names:
            results[name] = ways[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            results[name] = ways[name]()
            times[name].append(time.perf_counter() - start)
    return times, results
