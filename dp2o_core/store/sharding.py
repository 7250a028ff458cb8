"""Which process does which groups, with or without accelerate.

Under ``accelerate launch`` or ``torchrun`` every process sees ``RANK`` and
``WORLD_SIZE`` in its environment; a plain ``python`` run is process 0 of 1. Nothing here
imports torch or accelerate, so sharding works without them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcessInfo:
    """This process's index among ``count`` processes that share a stage's groups."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"process index {self.index} is not within 0..{self.count - 1}")

    @property
    def is_main(self) -> bool:
        """Process 0 prepares stages, waits for the others and merges."""
        return self.index == 0

    @classmethod
    def detect(cls, environ: Mapping[str, str] | None = None) -> ProcessInfo:
        """From ``RANK``/``WORLD_SIZE`` (accelerate, torchrun), else a single process."""
        env = os.environ if environ is None else environ
        count = int(env.get("WORLD_SIZE", "1") or 1)
        index = int(env.get("RANK", "0") or 0)
        return cls(index=index, count=count)

    def share(self, group_ids: Sequence[str], done: Iterable[str] = ()) -> list[str]:
        """This process's groups: every ``count``-th of the sorted ids, less those done.

        The assignment depends only on the full id list and the process count, so a
        resumed run gives every process the same share as before.
        """
        skip = set(done)
        ordered = sorted(group_ids)
        return [
            g for position, g in enumerate(ordered) if position % self.count == self.index and g not in skip
        ]
