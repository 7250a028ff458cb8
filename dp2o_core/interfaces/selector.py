"""The PairSelector interface: which (winner, loser) pairs one group yields."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from dp2o_core.interfaces.base import Implementation

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class SelectedPairs:
    """The pairs of a block of groups: group g's are ``[pair_offsets[g]:pair_offsets[g + 1]]``
    of ``winners`` and ``losers`` (candidate positions within the group, winner first)."""

    pair_offsets: np.ndarray
    winners: np.ndarray
    losers: np.ndarray


class PairSelector(Implementation):
    """Turns the rewards of one group of M candidates into preference pairs.

    A selector sees one group at a time and returns candidate indices, winner first. It
    must be deterministic (ties broken by candidate index) so that runs reproduce.
    Raise :class:`dp2o_core.errors.Dp2oError` when a group cannot be paired.

    Example::

        from dp2o_core import PairSelector, hookimpl

        class AdjacentSelector(PairSelector):
            \"\"\"Pairs each candidate with the next one in reward order.\"\"\"

            name = "adjacent"

            def select(self, rewards):
                order = sorted(range(len(rewards)), key=lambda i: (-rewards[i], i))
                return list(zip(order[:-1], order[1:]))

        @hookimpl
        def register_selectors(register):
            register(AdjacentSelector)
    """

    kind: ClassVar[str] = "selector"

    @abstractmethod
    def select(self, rewards: Sequence[float]) -> list[tuple[int, int]]:
        """Return (winner index, loser index) pairs for one group's rewards (higher is better)."""

    def select_block(self, rewards: np.ndarray, offsets: np.ndarray) -> SelectedPairs:
        """The pairs of many groups at once (the pairs stage calls this).

        ``rewards`` holds every candidate of every group, group g at
        ``[offsets[g]:offsets[g + 1]]``. Returns the pairs group by group: group g's pairs
        are ``[pair_offsets[g]:pair_offsets[g + 1]]`` of ``winners`` and ``losers``, which
        are positions within the group. The default calls :meth:`select` once per group;
        override it with array operations (and the same results) for large data sets.
        """
        import numpy as np

        counts: list[int] = []
        winners: list[int] = []
        losers: list[int] = []
        for start, end in zip(offsets[:-1], offsets[1:], strict=True):
            pairs = self.select(rewards[start:end].tolist())
            counts.append(len(pairs))
            winners.extend(w for w, _ in pairs)
            losers.extend(loser for _, loser in pairs)
        pair_offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
        return SelectedPairs(pair_offsets, np.asarray(winners, np.int64), np.asarray(losers, np.int64))
