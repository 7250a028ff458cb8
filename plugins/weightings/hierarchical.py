"""Hierarchical preference weighting and the uniform baseline, per group and vectorised.

Intra-group: w_intra = |R_w − R_l| + (1 − μ_gap), μ_gap the mean gap over the group's
pairs (so w_intra averages 1 within a group). Inter-group: w_inter(g) = σ_g + (1 − μ_σ),
σ_g the population standard deviation of R over all M candidates of group g and μ_σ the
mean of σ_g over every group of the data set (so w_inter averages 1 over groups). The
pair weight is w = w_intra · w_inter; either factor can be switched off (set to 1), which
is the paper's ablation.

The vectorised path (``group_statistics`` then ``weigh_block``) computes the same numbers
in two passes over blocks of groups: σ_g of every group first, then each block's weights
with μ_σ over all of them. Sums run left to right as in the per-group functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import Field

from dp2o_core import GroupPairs, PairWeights, PluginOptions, Weighting
from dp2o_core.interfaces.weighting import BlockWeights, PairBlock


def group_spread(rewards: Sequence[float]) -> float:
    """Population standard deviation of one group's rewards (σ_g).

    Squares are products (``d * d``, exactly rounded everywhere), not ``d ** 2``, whose
    libm ``pow`` may round differently by platform, so both paths agree to the bit.
    """
    from dp2o_core.segments import left_to_right

    mean = left_to_right(rewards) / len(rewards)
    return math.sqrt(left_to_right((r - mean) * (r - mean) for r in rewards) / len(rewards))


def group_spreads(rewards, offsets):
    """:func:`group_spread` of every group of a block (sums left to right, as there)."""
    import numpy as np

    from dp2o_core.segments import expand, group_sizes, sequential_sums

    sizes = group_sizes(offsets)
    means = sequential_sums(rewards, offsets) / sizes
    deviations = rewards - expand(means, offsets)
    squares = deviations * deviations
    return np.sqrt(sequential_sums(squares, offsets) / sizes)


def intra_weights(group: GroupPairs) -> list[float]:
    """|R_w − R_l| + (1 − μ_gap) for each pair of the group."""
    gaps = [abs(group.rewards[winner] - group.rewards[loser]) for winner, loser in group.pairs]
    if not gaps:
        return []
    from dp2o_core.segments import left_to_right

    mean_gap = left_to_right(gaps) / len(gaps)
    return [gap + (1.0 - mean_gap) for gap in gaps]


def inter_weights(groups: Sequence[GroupPairs]) -> list[float]:
    """σ_g + (1 − μ_σ) for every group, μ_σ over all the groups given (the whole data set)."""
    spreads = [group_spread(g.rewards) for g in groups]
    if not spreads:
        return []
    from dp2o_core.segments import left_to_right

    mean_spread = left_to_right(spreads) / len(spreads)
    return [spread + (1.0 - mean_spread) for spread in spreads]


class HierarchicalOptions(PluginOptions):
    """Which factors of the hierarchical weight are on."""

    intra: bool = Field(True, description="Weight pairs by their reward gap within the group (w_intra).")
    inter: bool = Field(True, description="Weight groups by their reward spread over the data set (w_inter).")


class HierarchicalWeighting(Weighting):
    """w = w_intra · w_inter: reward gap within a group times reward spread of the group (HPO)."""

    name = "hierarchical"
    Options = HierarchicalOptions

    def weigh(self, groups: Sequence[GroupPairs]) -> list[PairWeights]:
        """Weights for every pair; μ_σ is taken over all ``groups``, so pass the whole data set."""
        inter = inter_weights(groups) if self.options.inter else [1.0] * len(groups)
        result = []
        for group, group_inter in zip(groups, inter, strict=True):
            intra = intra_weights(group) if self.options.intra else [1.0] * len(group.pairs)
            result.append(
                PairWeights(
                    intra=intra,
                    inter=[group_inter] * len(group.pairs),
                    weight=[w * group_inter for w in intra],
                )
            )
        return result

    def group_statistics(self, rewards, offsets):
        """σ_g of every group of a block (population standard deviation of its rewards)."""
        return group_spreads(rewards, offsets)

    def weigh_block(self, block: PairBlock, statistics) -> BlockWeights:
        """w_intra · w_inter for every pair of the block; μ_σ over every group's σ_g."""
        import numpy as np

        from dp2o_core.segments import expand, sequential_sums, sequential_total

        counts = np.diff(block.pair_offsets)
        if self.options.intra:
            gaps = np.abs(block.winner_rewards() - block.loser_rewards())
            mean_gap = sequential_sums(gaps, block.pair_offsets) / np.maximum(counts, 1)
            intra = gaps + expand(1.0 - mean_gap, block.pair_offsets)
        else:
            intra = np.ones(int(block.pair_offsets[-1]))
        if self.options.inter and len(statistics):
            mean_spread = sequential_total(statistics) / len(statistics)
            inter = expand(statistics[block.positions] + (1.0 - mean_spread), block.pair_offsets)
        else:
            inter = np.ones(int(block.pair_offsets[-1]))
        return BlockWeights(intra=intra, inter=inter, weight=intra * inter)


class UniformWeighting(Weighting):
    """Every pair weighs 1 (plain Diffusion-DPO)."""

    name = "uniform"

    def weigh(self, groups: Sequence[GroupPairs]) -> list[PairWeights]:
        """Ones for every pair."""
        return [PairWeights([1.0] * len(g.pairs), [1.0] * len(g.pairs), [1.0] * len(g.pairs)) for g in groups]

    def group_statistics(self, rewards, offsets):
        """Nothing is needed across groups."""
        import numpy as np

        return np.zeros(len(offsets) - 1)

    def weigh_block(self, block: PairBlock, statistics) -> BlockWeights:
        """Ones for every pair of the block."""
        import numpy as np

        ones = np.ones(int(block.pair_offsets[-1]))
        return BlockWeights(intra=ones, inter=ones, weight=ones)
