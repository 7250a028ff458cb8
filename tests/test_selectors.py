"""The two built-in pair selectors on hand-made groups (docs/method.md §3)."""

from __future__ import annotations

import math

import pytest

from dp2o_core.errors import Dp2oError, UsageError
from dp2o_core.specs import resolve_spec


def selector(manager, spec: str):
    return resolve_spec(manager, "selector", spec, default="ratio").build()


def test_ratio_quarter_of_eight_gives_two_by_two_cross_pairs(dp2o_plugin_manager):
    rewards = [0.1, 0.9, 0.5, 0.7, 0.2, 0.3, 0.8, 0.0]
    pairs = selector(dp2o_plugin_manager, "ratio=0.25").select(rewards)
    # order: 1 (0.9), 6 (0.8), 3, 2, 5, 4, 0, 7 (0.0)
    assert pairs == [(1, 0), (1, 7), (6, 0), (6, 7)]
    assert all(rewards[w] > rewards[lo] for w, lo in pairs)


def test_default_ratio_is_one_quarter(dp2o_plugin_manager):
    pairs = selector(dp2o_plugin_manager, "ratio").select([float(i) for i in range(16)])
    assert len(pairs) == 16  # N = 4 → 4 × 4


def test_ties_are_broken_by_candidate_index(dp2o_plugin_manager):
    rewards = [0.5, 0.5, 0.5, 0.5]
    assert selector(dp2o_plugin_manager, "ratio=0.25").select(rewards) == [(0, 3)]
    assert selector(dp2o_plugin_manager, "ratio=0.5").select(rewards) == [(0, 2), (0, 3), (1, 2), (1, 3)]


def test_two_candidates_give_one_pair_best_first(dp2o_plugin_manager):
    assert selector(dp2o_plugin_manager, "ratio=0.25").select([0.2, 0.8]) == [(1, 0)]
    assert selector(dp2o_plugin_manager, "best-worst").select([0.2, 0.8]) == [(1, 0)]


def test_half_ratio_uses_every_candidate_once_per_side(dp2o_plugin_manager):
    rewards = [3.0, 1.0, 2.0, 0.0]
    pairs = selector(dp2o_plugin_manager, "ratio=0.5").select(rewards)
    assert pairs == [(0, 1), (0, 3), (2, 1), (2, 3)]
    winners, losers = {w for w, _ in pairs}, {lo for _, lo in pairs}
    assert winners | losers == {0, 1, 2, 3} and not winners & losers


def test_n_is_at_least_one_and_floor_is_exact(dp2o_plugin_manager):
    assert len(selector(dp2o_plugin_manager, "ratio=0.25").select([1.0, 2.0, 3.0])) == 1
    # 0.29 · 100 is 28.999… in floating point; N must still be 29.
    assert selector(dp2o_plugin_manager, "ratio=0.29").group_size(100) == 29
    assert selector(dp2o_plugin_manager, "ratio=0.0625").group_size(64) == 4  # the paper's C-FLUX


def test_n_option_sets_group_size_directly(dp2o_plugin_manager):
    sel = selector(dp2o_plugin_manager, "ratio:n=3")
    assert len(sel.select([float(i) for i in range(10)])) == 9
    with pytest.raises(Dp2oError, match="at least 8 candidates"):
        selector(dp2o_plugin_manager, "ratio:n=4").select([1.0] * 7)


def test_best_worst_is_one_pair_per_group(dp2o_plugin_manager):
    rewards = [0.3, 0.1, 0.9, 0.5, 0.1]
    assert selector(dp2o_plugin_manager, "best-worst").select(rewards) == [(2, 4)]


@pytest.mark.parametrize("spec", ["ratio=0", "ratio=0.6", "ratio=-0.1", "ratio=abc", "ratio:n=0"])
def test_invalid_ratios_are_usage_errors_naming_the_option(dp2o_plugin_manager, spec):
    with pytest.raises(UsageError) as error:
        selector(dp2o_plugin_manager, spec)
    message = str(error.value)
    assert "selector 'ratio'" in message
    assert ("ratio=" in message) or ("n=" in message)


def test_ratio_and_n_together_are_rejected(dp2o_plugin_manager):
    with pytest.raises(UsageError, match="either ratio or n"):
        selector(dp2o_plugin_manager, "ratio:ratio=0.25,n=2")


@pytest.mark.parametrize("rewards", [[], [1.0]])
def test_groups_too_small_to_pair_are_errors(dp2o_plugin_manager, rewards):
    with pytest.raises(Dp2oError, match="at least two candidates"):
        selector(dp2o_plugin_manager, "ratio").select(rewards)


def test_non_finite_rewards_are_errors(dp2o_plugin_manager):
    with pytest.raises(Dp2oError, match="candidate 1 has a non-finite reward"):
        selector(dp2o_plugin_manager, "best-worst").select([0.1, math.nan, 0.3])
