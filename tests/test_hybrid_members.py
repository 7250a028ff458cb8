"""A reward plugin's metric as a member of the paper's hybrid reward (and of the offline one);
member names checked when the configuration is resolved; dp2o pairs reusing the run's reward."""

from __future__ import annotations

import pytest
import torch
from candidates import write_candidates
from images import write_photos

from dp2o_core import MetricInfo, RewardModel, hookimpl
from dp2o_core.specs import resolve_spec
from dp2o_core.store import RunStore


class SharpnessReward(RewardModel):
    """Variance of the Laplacian: higher for sharper candidates."""

    name = "sharpness"

    def metrics(self):
        return [MetricInfo("sharpness", "NR", lower_better=False, version="test 1")]

    def score(self, candidates, reference=None):
        grey = candidates.mean(dim=1, keepdim=True)
        kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
        laplacian = torch.nn.functional.conv2d(grey, kernel)
        return {"sharpness": laplacian.flatten(1).var(dim=1).tolist()}

    def reward(self, scores):
        return list(scores["sharpness"])


class SharpnessPlugin:
    @hookimpl
    def register_rewards(self, register):
        register(SharpnessReward)


def _candidates() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(1, 3, 96, 96, generator=generator)
    blurred = torch.nn.functional.avg_pool2d(reference, 3, stride=1, padding=1)
    noise = torch.rand(4, 3, 96, 96, generator=generator)
    weights = torch.tensor([0.0, 0.3, 0.6, 1.0]).view(4, 1, 1, 1)
    return (1 - weights) * blurred + weights * noise, reference[0]


@pytest.mark.parametrize(
    "spec",
    ["hybrid-offline:nr=[niqe,piqe,sharpness]", "hybrid:fr=[psnr,ssim],nr=[sharpness]"],
)
def test_a_reward_plugins_metric_is_a_hybrid_member(dp2o_add_plugin, spec):
    manager = dp2o_add_plugin(SharpnessPlugin())
    reward = resolve_spec(manager, "reward", spec).build()
    assert "sharpness" in [m.name for m in reward.metrics()]
    candidates, reference = _candidates()
    scores = reward.score(candidates, reference)
    assert set(scores) == {m.name for m in reward.metrics()}
    assert scores["sharpness"] == SharpnessReward().score(candidates)["sharpness"]
    rewards = reward.reward(scores)
    assert len(rewards) == 4 and all(0.0 <= r <= 1.0 for r in rewards)
    only_sharpness = resolve_spec(manager, "reward", "hybrid:fr=[],nr=[sharpness]").build()
    ranked = only_sharpness.reward({"sharpness": scores["sharpness"]})
    assert ranked.index(max(ranked)) == scores["sharpness"].index(max(scores["sharpness"]))


def test_a_members_mode_must_match_its_set(dp2o_add_plugin):
    from dp2o_core.errors import Dp2oError

    manager = dp2o_add_plugin(SharpnessPlugin())
    with pytest.raises(Dp2oError, match="'sharpness' is a NR metric but is listed under fr"):
        resolve_spec(manager, "reward", "hybrid:fr=[sharpness],nr=[niqe]").build()


def test_a_misspelt_member_fails_when_the_configuration_is_resolved(dp2o_cli):
    result = dp2o_cli("config", "--reward", "hybrid-offline:nr=[niqe,piqx]")
    assert result.exit_code == 2
    assert "unknown pyiqa metric 'piqx'. Did you mean 'piqe'?" in result.stderr
    assert "installed reward plugin" in result.stderr


def test_the_plugin_member_is_a_column_of_the_scores_table(dp2o_cli, dp2o_add_plugin, tmp_path, monkeypatch):
    monkeypatch.setenv("DP2O_CACHE", str(tmp_path / "dp2o-cache"))
    dp2o_add_plugin(SharpnessPlugin())
    folder = tmp_path / "imgs"
    write_photos(folder, ("astronaut", "coffee"), size=64)
    run = tmp_path / "run"
    assert dp2o_cli("prepare", str(run), "--data", f"hr:path={folder},crop=64").exit_code == 0
    write_candidates(RunStore(run))
    reward = "hybrid-offline:fr=[gmsd],nr=[piqe,sharpness]"
    scored = dp2o_cli("score", str(run), "--reward", reward)
    assert scored.exit_code == 0, scored.stderr
    table = RunStore(run).read_table("score", "scores")
    assert {"gmsd", "piqe", "sharpness"} <= set(table.column_names)
    # without flags, dp2o pairs recombines with the reward the run was scored with
    paired = dp2o_cli("pairs", str(run))
    assert paired.exit_code == 0, paired.stderr
    recorded = RunStore(run).record("pairs")["config"]["reward"]
    assert recorded["name"] == "hybrid-offline" and recorded["options"]["nr"] == ["piqe", "sharpness"]
