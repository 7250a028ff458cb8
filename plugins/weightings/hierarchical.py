"""Hierarchical preference weighting (PAPER.md §4) and the uniform baseline.

Intra-group: w_intra = |R_w − R_l| + (1 − μ_gap), μ_gap the mean gap over the group's
pairs (so w_intra averages 1 within a group). Inter-group: w_inter(g) = σ_g + (1 − μ_σ),
σ_g the population standard deviation of R over all M candidates of group g and μ_σ the
mean of σ_g over every group of the data set (so w_inter averages 1 over groups). The
pair weight is w = w_intra · w_inter; either factor can be switched off (set to 1), which
is the paper's ablation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import Field

from dp2o_core import GroupPairs, PairWeights, PluginOptions, Weighting


def group_spread(rewards: Sequence[float]) -> float:
    """Population standard deviation of one group's rewards (σ_g)."""
    mean = sum(rewards) / len(rewards)
    return math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))


def intra_weights(group: GroupPairs) -> list[float]:
    """|R_w − R_l| + (1 − μ_gap) for each pair of the group."""
    gaps = [abs(group.rewards[winner] - group.rewards[loser]) for winner, loser in group.pairs]
    if not gaps:
        return []
    mean_gap = sum(gaps) / len(gaps)
    return [gap + (1.0 - mean_gap) for gap in gaps]


def inter_weights(groups: Sequence[GroupPairs]) -> list[float]:
    """σ_g + (1 − μ_σ) for every group, μ_σ over all the groups given (the whole data set)."""
    spreads = [group_spread(g.rewards) for g in groups]
    if not spreads:
        return []
    mean_spread = sum(spreads) / len(spreads)
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


class UniformWeighting(Weighting):
    """Every pair weighs 1 (plain Diffusion-DPO)."""

    name = "uniform"

    def weigh(self, groups: Sequence[GroupPairs]) -> list[PairWeights]:
        """Ones for every pair."""
        return [PairWeights([1.0] * len(g.pairs), [1.0] * len(g.pairs), [1.0] * len(g.pairs)) for g in groups]
