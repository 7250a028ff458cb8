"""The Weighting interface: one weight per preference pair, over the whole data set."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from dp2o_core.interfaces.base import Implementation

if TYPE_CHECKING:
    import numpy as np


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
    over the data set (docs/method.md §4, μ_σ) need every group — never a shard or a batch.

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

    # -- the vectorised path (optional) -------------------------------------------------------
    #: The pairs stage weighs in two passes over blocks of groups when a weighting overrides
    #: both methods below, so the whole data set's pairs never sit in memory at once; a
    #: weighting with only :meth:`weigh` gets every group in one call.

    def group_statistics(self, rewards: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Pass 1: one number per group of a block that the data-set-wide terms need (for
        hierarchical weighting, σ_g). ``rewards`` and ``offsets`` as in
        :meth:`PairSelector.select_block`."""
        raise NotImplementedError

    def weigh_block(self, block: PairBlock, statistics: np.ndarray) -> BlockWeights:
        """Pass 2: the weights of every pair of ``block``. ``statistics`` holds
        :meth:`group_statistics` of every group of the data set, ordered by group id;
        ``block.positions`` says where the block's groups are in it."""
        raise NotImplementedError


@dataclass(frozen=True)
class PairBlock:
    """A block of groups with their rewards and selected pairs, as flat arrays.

    Group g (``group_ids[g]``, at ``positions[g]`` among all groups sorted by id) has its
    candidates' rewards at ``rewards[offsets[g]:offsets[g + 1]]`` and its pairs at
    ``[pair_offsets[g]:pair_offsets[g + 1]]`` of ``winners`` / ``losers`` (positions within
    the group).
    """

    group_ids: Sequence[str]
    positions: np.ndarray
    rewards: np.ndarray
    offsets: np.ndarray
    pair_offsets: np.ndarray
    winners: np.ndarray
    losers: np.ndarray

    def winner_rewards(self) -> np.ndarray:
        """The reward of each pair's winner."""
        return self.rewards[self._pair_base() + self.winners]

    def loser_rewards(self) -> np.ndarray:
        """The reward of each pair's loser."""
        return self.rewards[self._pair_base() + self.losers]

    def _pair_base(self) -> np.ndarray:
        import numpy as np

        return np.repeat(self.offsets[:-1], np.diff(self.pair_offsets))


@dataclass(frozen=True)
class BlockWeights:
    """Per-pair weights of a :class:`PairBlock` (the factors, and the product the loss uses)."""

    intra: np.ndarray
    inter: np.ndarray
    weight: np.ndarray
