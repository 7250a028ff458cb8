"""The embedded default, shortened: `dp2o train` with no backbone runs every stage offline,
evaluates base vs tuned on held-out photographs, writes a report whose numbers are the run's,
and its pairs export to a Hugging Face dataset."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from dp2o_core.store import RunStore

STAGES = ("data", "sample", "score", "pairs", "train", "eval")
#: the embedded default with fewer images, candidates and steps; the same code path
SHORT = ("--data", "photos:max_images=2", "--eval-data", "photos:max_images=1", "-m", "4",
         "--max-steps", "2", "--batch-size", "2", "--micro-batch-size", "2", "--tracker", "none")  # fmt: skip


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory):
    """One shortened embedded run (a real `dp2o` process) shared by the tests of this module."""
    folder = tmp_path_factory.mktemp("embedded") / "run"
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "dp2o_cli", "train", "--run", str(folder), *SHORT],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    return folder, done.returncode, done.stdout + done.stderr


def test_every_stage_runs_and_the_summary_shows_held_out_numbers(embedded_run):
    folder, code, stdout = embedded_run
    assert code == 0, stdout
    assert "embedded default" in stdout
    store = RunStore(folder)
    assert [store.status(s).state for s in STAGES] == ["done"] * 6
    assert store.read_table("data", "groups").num_rows == 2
    assert store.read_table("sample", "candidates").num_rows == 8
    assert store.read_table("score", "scores").num_rows == 8
    assert store.read_table("pairs", "pairs").num_rows == 2  # ratio 0.25 of 4 → 1 × 1 per group
    config = json.loads((folder / "config.json").read_text())
    assert config["components"]["backbone"]["name"] == "tiny-sr"
    assert config["components"]["reward"]["name"] == "hybrid-offline"
    # the held-out evaluation draws the embedded default's 8 samples per input, whatever -m is
    for row in ("PSNR-Y", "hybrid-offline Best@8", "hybrid-offline Mean@8", "hybrid-offline Worst@8"):
        assert row in stdout
    assert f"Report: {folder / 'report.html'}" in stdout


def test_the_tuned_weights_load_and_upscale(embedded_run, dp2o_cli, tmp_path):
    folder, _, stdout = embedded_run
    spec = re.search(r"--backbone '([^']+)'", stdout).group(1)
    assert spec == f"tiny-sr:weights={folder / 'train' / 'final'}"
    lr = next(p for p in (folder / "data").rglob("*.png") if "/lr/" in p.as_posix())
    result = dp2o_cli("upscale", str(lr), str(tmp_path / "up.png"), "--backbone", spec)
    assert result.exit_code == 0, result.stderr
    from PIL import Image

    assert Image.open(tmp_path / "up.png").size == (96, 96)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []
        self.values: dict[str, str] = {}
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs["src"])
        if "data-key" in attrs:
            self.values[attrs["data-key"]] = attrs["data-value"]
        if tag not in ("img", "br", "meta"):
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()


def test_the_report_parses_references_existing_files_and_shows_the_run_numbers(embedded_run):
    folder, _, _ = embedded_run
    page = _Page()
    page.feed((folder / "report.html").read_text())
    page.close()
    assert page.open == []
    assert page.sources, "the report shows no images"
    for source in page.sources:
        assert (folder / source).is_file(), source
    for chart in ("reward_distribution", "pair_weights", "training_curves", "held_out_rewards"):
        assert f"report/{chart}.png" in page.sources
    assert any(s.endswith("/tuned.png") for s in page.sources) and any(
        s.endswith("/hr.png") for s in page.sources
    )

    store = RunStore(folder)
    pairs = store.read_table("pairs", "pairs").to_pylist()
    assert int(page.values["pairs.count"]) == len(pairs)
    assert float(page.values["weights.mean"]) == pytest.approx(sum(p["weight"] for p in pairs) / len(pairs))
    rewards = store.read_table("pairs", "rewards").column("reward").to_pylist()
    assert float(page.values["rewards.max"]) == max(rewards)
    assert int(page.values["train.steps"]) == 2
    evaluation = json.loads((folder / "eval" / "held-out.json").read_text())
    tuned = next(m for m in evaluation["models"] if m["label"] == "tuned")
    assert float(page.values["eval.tuned.psnry"]) == tuned["metrics"]["psnry"]["mean"]
    assert float(page.values["eval.tuned.reward.worst"]) == tuned["reward"]["worst"]["mean"]
    # the paired statistics of the held-out table, as dp2o eval --compare prints them
    comparison = evaluation["comparisons"]["tuned"]["reward.mean"]
    assert float(page.values["eval.difference.reward.mean"]) == comparison["mean_difference"]
    wilcoxon = float(page.values["eval.wilcoxon_p.reward.mean"])
    if comparison["n"] > 1:
        assert wilcoxon == comparison["wilcoxon_p_value"]
    else:  # undefined from one input: null in the record, NaN on the page (shown as -)
        assert comparison["wilcoxon_p_value"] is None and math.isnan(wilcoxon)
    assert "reward.FR" in evaluation["per_input"]["tuned"]
    timings = json.loads((folder / "timings.json").read_text())
    assert float(page.values["stages.sample.seconds"]) == timings["sample"]["seconds"]


def test_dp2o_report_rewrites_the_page(embedded_run, dp2o_cli):
    folder, _, _ = embedded_run
    (folder / "report.html").unlink()
    result = dp2o_cli("report", str(folder))
    assert result.exit_code == 0, result.stderr
    assert (folder / "report.html").is_file()
    missing = dp2o_cli("report", str(folder / "nothing"))
    assert missing.exit_code == 2 and "not a dp2o run directory" in missing.stderr


def test_pairs_export_to_a_pick_a_pic_dataset(embedded_run, dp2o_cli, tmp_path):
    import io

    import datasets
    from PIL import Image

    folder, _, _ = embedded_run
    out = tmp_path / "pairs"
    result = dp2o_cli("export", str(folder), str(out), "--format", "hf")
    assert "examples/s" not in result.stderr and "Saving the dataset" not in result.stderr  # no datasets bars
    assert result.exit_code == 0, result.stderr
    dataset = datasets.load_from_disk(str(out))
    assert {"jpg_0", "jpg_1", "label_0", "caption", "group_id", "weight", "lr"} <= set(dataset.column_names)
    pairs = RunStore(folder).read_table("pairs", "pairs").to_pylist()
    assert len(dataset) == len(pairs)
    by_key = {(p["group_id"], p["winner"], p["loser"]): p for p in pairs}
    for row in dataset:
        winner, loser = (
            (row["candidate_0"], row["candidate_1"])
            if row["label_0"] == 1.0
            else (row["candidate_1"], row["candidate_0"])
        )
        pair = by_key[(row["group_id"], winner, loser)]
        assert row["weight"] == pair["weight"]
        image = Image.open(io.BytesIO(row["jpg_0"]))
        assert image.size == (96, 96)
        assert Image.open(io.BytesIO(row["lr"])).size == (24, 24)
    again = dp2o_cli("export", str(folder), str(out))
    assert again.exit_code == 2 and "not empty" in again.stderr
