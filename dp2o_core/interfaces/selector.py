"""The PairSelector interface: which (winner, loser) pairs one group yields."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from dp2o_core.interfaces.base import Implementation


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
