"""``dp2o eval``: paired sampling, metrics, pooled Best/Mean/Worst@M, unavailable metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dp2o_core.eval_stats import PairedComparison, format_p
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


def test_paired_statistics_match_textbook_values():
    """d = 1..5: mean 3, SE √2.5/√5, t = 4.243 on 4 degrees of freedom (p = 0.0132), and the
    exact signed-rank p = 2/32 (all five ranks positive)."""
    base = [10.0, 10.0, 10.0, 10.0, 10.0]
    model = [11.0, 12.0, 13.0, 14.0, 15.0]
    up = PairedComparison.of(base, model)
    assert up.n == 5 and up.mean_difference == 3.0
    assert up.standard_error == pytest.approx((2.5 / 5) ** 0.5)
    assert up.t_p_value == pytest.approx(0.013236, abs=2e-6)
    assert up.wilcoxon_p_value == pytest.approx(0.0625)
    assert (up.better, up.worse) == (5, 0)
    down = PairedComparison.of(base, model, lower_better=True)  # a larger NIQE is worse
    assert (down.better, down.worse) == (0, 5) and down.t_p_value == up.t_p_value
    same = PairedComparison.of(base, base)
    assert (same.mean_difference, same.standard_error, same.t_p_value, same.wilcoxon_p_value) == (0, 0, 1, 1)
    assert (same.better, same.worse) == (0, 0)
    assert format_p(0.0004) == "<0.001" and format_p(0.0132) == "0.013"


def test_compare_reports_per_input_statistics_and_writes_the_per_input_table(dp2o_cli, tmp_path):
    data = (
        "--data",
        "photos:split=held-out,crop=96,crops_per_image=2,crop_mode=random",
        "--degradation",
        "bicubic",
    )
    args = ("--backbone", "tiny-sr:steps=2", "--compare", "bicubic", "-m", "3", "--metrics", "psnry")
    csv_path, json_path = tmp_path / "inputs.csv", tmp_path / "inputs.json"
    result = dp2o_cli("eval", *data, *args, "--json", "--per-input", str(json_path))
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    evaluation = Evaluation.from_record(record)
    assert len(evaluation.inputs) == 4
    rows = json.loads(json_path.read_text())
    assert [(r["input"], r["model"]) for r in rows] == [
        (i, m) for i in evaluation.inputs for m in ("base", "compared")
    ]
    # the per-input values average to the pooled figures, and the comparison is their paired difference
    for key in ("psnry", "reward.mean", "reward.FR", "reward.NR", "diversity"):
        for model in evaluation.models:
            mine = [r[key] for r in rows if r["model"] == model.label]
            assert sum(mine) / 4 == pytest.approx(evaluation.stat(model, key).mean)
        comparison = evaluation.comparisons["compared"][key]
        base = [r[key] for r in rows if r["model"] == "base"]
        other = [r[key] for r in rows if r["model"] == "compared"]
        assert comparison == PairedComparison.of(base, other)
    # bicubic's samples are all alike: no seed diversity on any input, below tiny-sr's on every one
    assert evaluation.comparisons["compared"]["diversity"].worse == 4
    assert record["reward_parts"] == ["FR", "NR"]
    table = dp2o_cli("eval", *data, *args, "--per-input", str(csv_path))
    assert table.exit_code == 0, table.stderr
    for heading in ("Δ ± SE", "p (t)", "p (Wilcoxon)", "better / worse", "FR half", "NR half"):
        assert heading in table.stdout
    header, *lines = csv_path.read_text().splitlines()
    assert header.split(",")[:3] == ["input", "model", "psnry"] and len(lines) == 8
    wrong = dp2o_cli("eval", *data, *args, "--per-input", str(tmp_path / "inputs.txt"))
    assert wrong.exit_code == 2 and "inputs.txt" in wrong.stderr and ".csv" in wrong.stderr


@pytest.mark.parametrize("where", ["a folder no one can write", "a folder"])
def test_an_unwritable_per_input_path_fails_before_the_evaluation(dp2o_cli, tmp_path, where):
    if where == "a folder no one can write":
        target = Path("/proc/self/inputs.csv")  # not even root creates files there
    else:
        target = tmp_path / "inputs.csv"
        target.mkdir()
    data = ("--data", "photos:split=held-out,crop=48,crops_per_image=1", "--degradation", "bicubic")
    result = dp2o_cli("eval", *data, "--backbone", "tiny-sr:steps=2", "-m", "2", "--per-input", str(target))
    assert result.exit_code == 2
    assert f"--per-input {target} cannot be written" in result.stderr.replace("\n", " ")
    assert "eval" not in result.stdout  # nothing was sampled


def test_a_per_input_path_under_a_file_fails_before_the_evaluation(dp2o_cli, tmp_path):
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "sub" / "inputs.csv"
    data = ("--data", "photos:split=held-out,crop=48,crops_per_image=1", "--degradation", "bicubic")
    result = dp2o_cli("eval", *data, "--backbone", "tiny-sr:steps=2", "-m", "2", "--per-input", str(target))
    assert result.exit_code == 2 and "is not a folder" in result.stderr


def test_statistics_of_one_input_read_as_undefined():
    import math

    from dp2o_core.eval_stats import PairedComparison, format_p

    one = PairedComparison.of([0.5], [0.6])
    assert math.isnan(one.t_p_value) and math.isnan(one.wilcoxon_p_value)
    assert format_p(one.t_p_value) == "-" and format_p(one.wilcoxon_p_value) == "-"
    two = PairedComparison.of([0.5, 0.5], [0.6, 0.7])
    assert 0 <= two.t_p_value <= 1 and two.standard_error > 0


def test_a_compared_backbone_that_is_not_ready_fails_before_the_evaluation(dp2o_cli, tmp_path):
    missing = tmp_path / "no-such-model"
    data = ("--data", "photos:split=held-out,crop=48,crops_per_image=1", "--degradation", "bicubic")
    result = dp2o_cli(
        "eval", *data, "--backbone", "tiny-sr:steps=2", "--compare", f"tiny-sr:weights={missing}", "-m", "2"
    )
    assert result.exit_code == 2
    assert str(missing) in result.stderr
    assert "eval" not in result.stdout  # nothing was sampled


def test_outputs_of_another_size_than_the_hr_images_stop_before_sampling(dp2o_cli, tmp_path):
    """LR images registered at the HR's size read with scale=1 (as the DP²O-SR authors run
    RealSR) need a backbone with upscale=1: a ×4 one is stopped, naming both fixes."""
    from images import photo
    from PIL import Image

    hr = photo("astronaut", 96)
    Image.fromarray(hr).save(tmp_path / "Canon_001_HR.png")
    Image.fromarray(hr).save(tmp_path / "Canon_001_LR4.png")
    data = ("--data", f"paired:path={tmp_path},scale=1")
    result = dp2o_cli("eval", *data, "--backbone", "tiny-sr:steps=2", "-m", "1", "--metrics", "psnry")
    assert result.exit_code == 2
    assert "makes 384×384 images of the 96×96 input 'Canon_001', whose HR is 96×96" in result.stderr
    assert "scale=4" in result.stderr and "upscale=1" in result.stderr
