"""How long each stage of a run took when it last did work, for the report.

``RUN/timings.json`` maps a stage to its latest working run: wall seconds, units of work
done in that run (images, candidates, steps) and their name. A skipped stage keeps the
timing of the run that did its work.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dp2o_core.atomic import write_text_atomic
from dp2o_core.store import RunStore

TIMINGS_FILE = "timings.json"


def read_timings(store: RunStore) -> dict[str, dict[str, Any]]:
    """Stage → {seconds, units, unit}; empty when nothing was timed."""
    try:
        return json.loads((store.root / TIMINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def record_timing(store: RunStore, stage: str, seconds: float, units: int | None, unit: str) -> None:
    """Store one stage's timing (read-modify-write; called by process 0 only)."""
    timings = read_timings(store)
    timings[stage] = {"seconds": round(seconds, 2), "units": units, "unit": unit}
    write_text_atomic(store.root / TIMINGS_FILE, json.dumps(timings, indent=2, sort_keys=True) + "\n")


@contextmanager
def timed(store: RunStore, stage: str, unit: str, enabled: bool = True) -> Iterator[dict[str, Any]]:
    """Time the block; set ``units`` in the yielded dict to record the work done."""
    facts: dict[str, Any] = {"units": None}
    started = time.perf_counter()
    yield facts
    if enabled:
        record_timing(store, stage, time.perf_counter() - started, facts["units"], unit)
