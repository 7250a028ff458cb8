"""``dp2o eval``: paired sampling, metrics, pooled Best/Mean/Worst@M, unavailable metrics."""

from __future__ import annotations

import json

import pytest
import torch

from dp2o_core.evaluation import BicubicBaseline, EvalInput, EvalModel, Evaluation, Stat, evaluate
from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec

DATA = ("--data", "photos:split=held-out,crop=96,max_images=1", "--degradation", "bicubic")


def _eval_json(dp2o_cli, *args):
    result = dp2o_cli("eval", *DATA, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_comparing_a_model_with_itself_gives_zero_differences(dp2o_cli):
    record = _eval_json(
        dp2o_cli,
        "--backbone",
        "tiny-sr:steps=2",
        "--compare",
        "tiny-sr:steps=2",
        "-m",
        "3",
        "--metrics",
        "fidelity",
    )
    base, other = record["models"]
    assert record["inputs"] == ["astronaut"] and record["num_samples"] == 3
    assert set(base["metrics"]) == {"psnry", "ssim", "fsim", "vsi", "gmsd", "niqe", "piqe"}
    assert base["metrics"] == other["metrics"]  # same seeds, same model
    assert base["reward"] == other["reward"]
    assert base["reward"]["best"]["mean"] >= base["reward"]["mean"]["mean"] >= base["reward"]["worst"]["mean"]
    assert base["diversity"]["mean"] > 0


def test_bicubic_baseline_and_seed_sets(dp2o_cli):
    record = _eval_json(
        dp2o_cli,
        "--backbone",
        "tiny-sr:steps=2",
        "--compare",
        "bicubic",
        "-m",
        "2",
        "-k",
        "2",
        "--metrics",
        "psnry",
    )
    model, bicubic = record["models"]
    assert bicubic["spec"] == "bicubic" and bicubic["diversity"]["mean"] == 0
    assert bicubic["metrics"]["psnry"]["std"] == 0  # the same image whatever the seed set
    assert model["metrics"]["psnry"]["std"] > 0
    # bicubic's M samples are identical, so its best and worst reward coincide
    assert bicubic["reward"]["best"] == bicubic["reward"]["worst"]


def test_metrics_without_weights_are_listed_not_fatal(dp2o_cli, monkeypatch, tmp_path):
    monkeypatch.setenv("DP2O_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    result = dp2o_cli("eval", *DATA, "--backbone", "tiny-sr:steps=2", "-m", "2", "--metrics", "lpips,psnry")
    assert result.exit_code == 0, result.stderr
    assert "PSNR-Y" in result.stdout
    assert "unavailable lpips" in result.stdout and "alexnet" in result.stdout
    unknown = dp2o_cli("eval", *DATA, "--metrics", "psnr_typo")
    assert unknown.exit_code != 0 and "psnr_typo" in unknown.stderr
    no_data = dp2o_cli("eval")
    assert no_data.exit_code == 2 and "--data" in no_data.stderr


def test_pooled_reward_ranks_a_better_model_higher():
    """The reward is normalised over both models' samples, so a model whose samples are the
    HR image itself gets Best = Mean = Worst = 1 and bicubic 0."""
    hr = torch.rand(1, 3, 32, 32)
    lr = torch.nn.functional.interpolate(hr, size=(8, 8), mode="bicubic", antialias=True).clamp(0, 1)

    class Oracle:
        def sample(self, lr, seeds, prompts=None):
            from dp2o_core.interfaces import SampleResult

            return SampleResult(images=hr.unsqueeze(1).expand(1, len(seeds[0]), -1, -1, -1), seeds=seeds)

    reward = resolve_spec(PluginManager(), "reward", "hybrid:fr=[psnr],nr=[]").build()
    result = evaluate(
        [("oracle", "oracle", Oracle()), ("bicubic", "bicubic", BicubicBaseline())],
        [EvalInput("x", lr, hr)],
        [],
        reward,
        num_samples=2,
    )
    oracle, bicubic = result.models
    assert oracle.reward == {c: Stat(1.0, 0.0) for c in ("best", "mean", "worst")}
    assert bicubic.reward["mean"] == Stat(0.0, 0.0)
    again = Evaluation.from_record(json.loads(json.dumps(result.to_record())))
    assert again.to_record() == result.to_record()


@pytest.mark.parametrize("values, expected", [([1.0], Stat(1.0, 0.0)), ([1.0, 3.0], Stat(2.0, 2**0.5))])
def test_seed_set_statistics(values, expected):
    stat = Stat.of(values)
    assert (stat.mean, stat.std) == pytest.approx((expected.mean, expected.std))


def test_every_raw_score_lands_in_one_flat_table():
    """The evaluation keeps each candidate's score per model, seed set, input and metric."""
    hr = torch.rand(1, 3, 32, 32)
    lr = torch.nn.functional.interpolate(hr, size=(8, 8), mode="bicubic", antialias=True).clamp(0, 1)
    reward = resolve_spec(PluginManager(), "reward", "hybrid:fr=[psnr],nr=[]").build()
    result = evaluate(
        [EvalModel("bicubic", "bicubic", BicubicBaseline())], [EvalInput("x", lr, hr)], [], reward,
        num_samples=3, seeds=2,
    )  # fmt: skip
    rows = list(result.scores.rows())
    assert len(rows) == 2 * 3  # seed sets × candidates, one metric
    assert {(r["model"], r["input"], r["metric"]) for r in rows} == {("bicubic", "x", "psnr")}
    expected = [(k, m) for k in range(2) for m in range(3)]
    assert sorted({(r["seed_set"], r["candidate"]) for r in rows}) == expected
    per_set = [sum(r["value"] for r in rows if r["seed_set"] == k) / 3 for k in range(2)]
    assert result.models[0].metrics["psnr"].mean == pytest.approx(sum(per_set) / 2)
