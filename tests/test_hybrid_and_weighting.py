"""docs/method.md §2 and §4 on hand-computed groups."""

from __future__ import annotations

import math

import pytest
from dp2o_plugins.rewards.hybrid import hybrid_rewards, normalise_within_group
from dp2o_plugins.weightings.hierarchical import group_spread

from dp2o_core import GroupPairs, MetricInfo
from dp2o_core.specs import resolve_spec

UP = MetricInfo("up", "FR", lower_better=False)
DOWN = MetricInfo("down", "FR", lower_better=True)
NR1 = MetricInfo("nr1", "NR", lower_better=False)
NR2 = MetricInfo("nr2", "NR", lower_better=True)


def test_orientation_and_min_max():
    assert normalise_within_group([1.0, 3.0, 2.0], lower_better=False) == [0.0, 1.0, 0.5]
    assert normalise_within_group([1.0, 3.0, 2.0], lower_better=True) == [1.0, 0.0, 0.5]


def test_constant_metric_gives_one_half():
    assert normalise_within_group([0.7, 0.7, 0.7], lower_better=False) == [0.5, 0.5, 0.5]


def test_hybrid_is_equal_weight_mean_of_set_means():
    scores = {
        "up": [0.0, 10.0, 5.0],
        "down": [2.0, 4.0, 0.0],
        "nr1": [1.0, 1.0, 1.0],
        "nr2": [30.0, 10.0, 20.0],
    }
    # normalised: up [0, 1, .5]; down [.5, 0, 1]; nr1 [.5, .5, .5]; nr2 [0, 1, .5]
    fr = [(0 + 0.5) / 2, (1 + 0) / 2, (0.5 + 1) / 2]
    nr = [(0.5 + 0) / 2, (0.5 + 1) / 2, (0.5 + 0.5) / 2]
    expected = [0.5 * f + 0.5 * n for f, n in zip(fr, nr, strict=True)]
    got = hybrid_rewards(scores, [UP, DOWN, NR1, NR2], ["up", "down"], ["nr1", "nr2"])
    assert got == pytest.approx(expected, abs=1e-15)


def test_fr_and_nr_get_equal_weight_whatever_their_sizes():
    scores = {"up": [0.0, 1.0], "down": [0.0, 1.0], "nr1": [1.0, 0.0]}
    # FR set: up [0, 1], down [1, 0] → mean [.5, .5]; NR: [1, 0]  → R = [.75, .25]
    assert hybrid_rewards(scores, [UP, DOWN, NR1], ["up", "down"], ["nr1"]) == [0.75, 0.25]


def test_balance_and_empty_sets():
    scores = {"up": [0.0, 1.0], "nr1": [1.0, 0.0]}
    assert hybrid_rewards(scores, [UP, NR1], ["up"], ["nr1"], balance=0.8) == pytest.approx([0.2, 0.8])
    assert hybrid_rewards(scores, [UP, NR1], ["up"], []) == [0.0, 1.0]
    assert hybrid_rewards(scores, [UP, NR1], [], ["nr1"]) == [1.0, 0.0]


def weigh(manager, spec, groups):
    return resolve_spec(manager, "weighting", spec).build().weigh(groups)


GROUPS = [
    GroupPairs("a", [0.9, 0.5, 0.1, 0.3], [(0, 2), (0, 3), (1, 2), (1, 3)]),
    GroupPairs("b", [0.6, 0.4, 0.5, 0.5], [(0, 1)]),
]


def test_intra_weights_are_gap_plus_one_minus_mean_gap(dp2o_plugin_manager):
    (a, b) = weigh(dp2o_plugin_manager, "hierarchical:inter=false", GROUPS)
    gaps = [0.8, 0.6, 0.4, 0.2]
    assert a.intra == pytest.approx([g + 1 - 0.5 for g in gaps], abs=1e-15)
    assert sum(a.intra) / len(a.intra) == pytest.approx(1.0)
    assert b.intra == pytest.approx([1.0])  # one pair: gap + 1 − gap
    assert a.inter == [1.0] * 4 and a.weight == a.intra


def test_inter_weights_use_population_std_and_mean_over_groups(dp2o_plugin_manager):
    (a, b) = weigh(dp2o_plugin_manager, "hierarchical:intra=false", GROUPS)
    sa = math.sqrt(sum((r - 0.45) ** 2 for r in [0.9, 0.5, 0.1, 0.3]) / 4)
    sb = math.sqrt(sum((r - 0.5) ** 2 for r in [0.6, 0.4, 0.5, 0.5]) / 4)
    assert group_spread([0.9, 0.5, 0.1, 0.3]) == pytest.approx(sa)
    mu = (sa + sb) / 2
    assert a.inter == pytest.approx([sa + 1 - mu] * 4, abs=1e-15)
    assert b.inter == pytest.approx([sb + 1 - mu], abs=1e-15)
    assert (a.inter[0] + b.inter[0]) / 2 == pytest.approx(1.0)
    assert a.intra == [1.0] * 4


def test_weight_is_the_product_and_uniform_is_one(dp2o_plugin_manager):
    for group in weigh(dp2o_plugin_manager, "hierarchical", GROUPS):
        assert group.weight == pytest.approx([i * e for i, e in zip(group.intra, group.inter, strict=True)])
    for group in weigh(dp2o_plugin_manager, "uniform", GROUPS):
        assert set(group.weight) == {1.0}
    both_off = weigh(dp2o_plugin_manager, "hierarchical:intra=false,inter=false", GROUPS)
    assert {w for g in both_off for w in g.weight} == {1.0}


def test_inter_weight_depends_on_every_group(dp2o_plugin_manager):
    alone = weigh(dp2o_plugin_manager, "hierarchical", GROUPS[:1])[0]
    together = weigh(dp2o_plugin_manager, "hierarchical", GROUPS)[0]
    assert alone.inter[0] == pytest.approx(1.0)
    assert together.inter[0] != pytest.approx(1.0)


def test_hybrid_rejects_a_metric_in_the_wrong_set(dp2o_plugin_manager):
    from dp2o_core.errors import Dp2oError

    with pytest.raises(Dp2oError, match="'niqe' is a NR metric but is listed under fr"):
        resolve_spec(dp2o_plugin_manager, "reward", "hybrid:fr=[niqe],nr=[piqe]").build()


def test_hybrid_reward_uses_directions_from_pyiqa(dp2o_plugin_manager):
    reward = resolve_spec(dp2o_plugin_manager, "reward", "hybrid").build()
    directions = {m.name: (m.mode, m.lower_better) for m in reward.metrics()}
    assert directions["lpips"] == ("FR", True)
    assert directions["afine_fr"] == ("FR", True) and directions["afine_nr"] == ("NR", True)
    assert directions["topiq_fr"] == ("FR", False) and directions["maniqa"] == ("NR", False)
    assert len(directions) == 9
    assert all(m.version.startswith("pyiqa ") for m in reward.metrics())
