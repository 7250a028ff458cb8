"""The Weighting interface: one weight per preference pair, over the whole data set."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from dp2o_core.interfaces.base import Implementation


@dataclass(frozen=True)
class GroupPairs:
    """One group's rewards (all M candidates) and the pairs a selector chose from it."""

    group_id: str
    rewards: Sequence[float]
    pairs: Sequence[tuple[int, int]]


@dataclass(frozen=True)
class PairWeights:
    """Weights of one group's pairs, in the order of :attr:`GroupPairs.pairs`.

    ``weight`` is what the loss multiplies; ``intra`` and ``inter`` are its factors
    (1.0 where a weighting has no such factor), kept so the pairs table can show them.
    """

    intra: Sequence[float]
    inter: Sequence[float]
    weight: Sequence[float]


class Weighting(Implementation):
    """Weights every pair of the data set; constant during training (no gradient).

    A weighting sees all groups at once because terms such as the mean reward spread
    over the data set (PAPER.md §4, μ_σ) need every group — never a shard or a batch.

    Example::

        from dp2o_core import PairWeights, Weighting, hookimpl

        class GapWeighting(Weighting):
            \"\"\"Weights each pair by its reward gap.\"\"\"

            name = "gap"

            def weigh(self, groups):
                result = []
                for g in groups:
                    gaps = [g.rewards[w] - g.rewards[l] for w, l in g.pairs]
                    ones = [1.0] * len(gaps)
                    result.append(PairWeights(intra=gaps, inter=ones, weight=gaps))
                return result

        @hookimpl
        def register_weightings(register):
            register(GapWeighting)
    """

    kind: ClassVar[str] = "weighting"

    @abstractmethod
    def weigh(self, groups: Sequence[GroupPairs]) -> list[PairWeights]:
        """Return one :class:`PairWeights` per group, in the order given."""
