"""Which process does which groups, with or without accelerate, in one job or in many.

Under ``accelerate launch`` or ``torchrun`` every process sees ``RANK`` and
``WORLD_SIZE`` in its environment; a plain ``python`` run is process 0 of 1. A *shard job*
(``dp2o sample RUN --shard K/N``) is one of N jobs started separately — a Slurm array task,
a preemptible VM — that fill one run: shard K owns every N-th group of the sorted ids, the
same split N processes of one job get, and its own processes (if it is itself an accelerate
launch) split that share again. Nothing here imports torch or accelerate.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (counted from 0) of ``count`` independent jobs that fill one run."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(
                f"shard {self.index}/{self.count}: K counts from 0, so with N = {self.count} it is one of "
                f"0..{self.count - 1} (a Slurm array --array=0-{self.count - 1} gives these)"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"3/8"`` → ``Shard(3, 8)``; ValueError saying the form otherwise."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise ValueError(f"{text!r} is not K/N (shard K of N, K counted from 0: 0/8 … 7/8)")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def tag(self) -> str:
        """The shard in file names: ``s003-008``."""
        return f"s{self.index:03d}-{self.count:03d}"

    def owns(self, ordered: Sequence[str]) -> list[str]:
        """This shard's groups of the *sorted* ids: every ``count``-th from position ``index``."""
        return list(ordered[self.index :: self.count])


@dataclass(frozen=True)
class ProcessInfo:
    """This process's index among ``count`` processes that share a stage's groups — those of
    the whole run, or of ``shard`` in a shard job."""

    index: int = 0
    count: int = 1
    shard: Shard | None = None

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"process index {self.index} is not within 0..{self.count - 1}")

    @property
    def is_main(self) -> bool:
        """Process 0 prepares stages, waits for the others and merges."""
        return self.index == 0

    @property
    def writer(self) -> str:
        """The name of this process's folder of part files (and of its stage locks): ``p001``, or
        ``s003-008.p001`` in a shard job, so two jobs never write into one folder."""
        own = f"p{self.index:03d}"
        return own if self.shard is None else f"{self.shard.tag}.{own}"

    def with_shard(self, shard: Shard | None) -> ProcessInfo:
        """This process as a process of shard job ``shard``."""
        return ProcessInfo(self.index, self.count, shard)

    @classmethod
    def detect(cls, environ: Mapping[str, str] | None = None) -> ProcessInfo:
        """From ``RANK``/``WORLD_SIZE`` (accelerate, torchrun), else a single process."""
        env = os.environ if environ is None else environ
        count = int(env.get("WORLD_SIZE", "1") or 1)
        index = int(env.get("RANK", "0") or 0)
        return cls(index=index, count=count)

    def share(self, group_ids: Sequence[str], done: Iterable[str] = ()) -> list[str]:
        """This process's groups: every ``count``-th of the sorted ids (of its shard's, in a
        shard job), less those done.

        The assignment depends only on the full id list, the shard and the process count, so
        a resumed run gives every process the same share as before.
        """
        skip = set(done)
        ordered = sorted(group_ids)
        if self.shard is not None:
            ordered = self.shard.owns(ordered)
        return [
            g for position, g in enumerate(ordered) if position % self.count == self.index and g not in skip
        ]
