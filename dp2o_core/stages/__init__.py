"""The pipeline stages, each reading the run store and writing its own part of it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def without_runtime_options(record: Mapping[str, Any], runtime_options: Iterable[str]) -> dict[str, Any]:
    """A resolved component record without the options that change speed, not results.

    Stage fingerprints are made from such records, so moving a run to another device or
    changing a batch size does not redo finished work.
    """
    skip = set(runtime_options)
    options = {k: v for k, v in record.get("options", {}).items() if k not in skip}
    return {**record, "options": options}
