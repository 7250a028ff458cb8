"""An ordinary mistake never throws away finished work: a forgotten --config, a changed flag, a
rejected score import, a second process on the same run, a round's data switched, a damaged
configuration record."""

from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.csv
import pytest

from dp2o_core.store import RunStore

STAGES = ("data", "sample", "score", "pairs", "train")


def base_args(run: Path, *extra: str) -> list[str]:
    return [
        "train", "--run", str(run), "--rounds", "2", "--backbone", "tiny-sr:steps=2",
        "--data", "photos:split=train,crop=48,max_images=2", "--degradation", "bicubic",
        "--reward", "hybrid:fr=[psnr,ssim],nr=[]", "--selector", "best-worst", "-m", "3",
        "--max-steps", "2", "--batch-size", "2", "--micro-batch-size", "2", "--tracker", "none", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A finished two-round run (tiny-sr, two photographs)."""
    from dp2o_cli.app import run as run_cli

    run = tmp_path_factory.mktemp("made") / "run"
    assert run_cli(base_args(run)) == 0
    return run


def _copy(made: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(made, copy, symlinks=True)
    return copy


def _fingerprints(run: Path) -> dict[str, str]:
    found = {}
    for folder in (run, run / "rounds" / "2"):
        for stage in STAGES:
            record = RunStore(folder).record(stage)
            found[f"{folder.name}/{stage}"] = record and record["fingerprint"]
    return found


def _stage_lines(stdout: str) -> dict[str, str]:
    return {
        line.split(":", 1)[0]: line.split(":", 1)[1].strip()
        for line in stdout.splitlines()
        if line.split(":", 1)[0].split(" (")[0] in STAGES
    }


def test_train_on_an_existing_run_without_its_flags_continues_it_as_recorded(dp2o_cli, made, tmp_path):
    copy = _copy(made, tmp_path)
    before = _fingerprints(copy)
    again = dp2o_cli("train", "--run", str(copy))
    assert again.exit_code == 0, again.stderr
    assert "with the configuration it recorded" in again.stdout
    lines = _stage_lines(again.stdout)
    assert lines and all(text.startswith("current — skipped") for text in lines.values()), lines
    assert _fingerprints(copy) == before
    # dp2o sample on the run without flags samples with the run's backbone: nothing to do
    sampled = dp2o_cli("sample", str(copy))
    assert sampled.exit_code == 0, sampled.stderr
    assert "(0 sampled now), 3 candidates each" in sampled.stdout


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        (("-m", "4"), "sample: its settings changed: num_candidates: 3 → 4"),
        (("--backbone", "tiny-sr:steps=3"), "steps: 2 → 3"),
        (
            ("--data", "photos:split=train,crop=40,max_images=2"),
            "it reads the 'data' stage, which is redone (data: its settings changed",
        ),
    ],
)
def test_a_change_that_would_discard_sampling_is_shown_and_needs_redo(dp2o_cli, made, tmp_path, flags, shown):
    copy = _copy(made, tmp_path)
    before, record = _fingerprints(copy), (copy / "config.json").read_bytes()
    refused = dp2o_cli("train", "--run", str(copy), *flags)
    assert refused.exit_code == 2, refused.stdout
    assert "would discard finished work" in refused.stderr and "--redo" in refused.stderr
    assert "sample: 2 finished group(s) would be discarded" in refused.stderr
    assert "score: 2 finished group(s)" in refused.stderr and "sample (round 2): 2" in refused.stderr
    assert shown in refused.stderr.replace("\n", " ")
    assert _fingerprints(copy) == before and (copy / "config.json").read_bytes() == record

    if flags[0] == "-m":
        redone = dp2o_cli("train", "--run", str(copy), *flags, "--redo")
        assert redone.exit_code == 0, redone.stderr
        assert RunStore(copy).read_table("sample", "candidates").num_rows == 8
        assert json.loads((copy / "config.json").read_text())["sample"]["num_candidates"] == 4


def test_a_training_only_change_retrains_without_asking(dp2o_cli, made, tmp_path):
    copy = _copy(made, tmp_path)
    retrained = dp2o_cli("train", "--run", str(copy), "--rounds", "1", "--max-steps", "3")
    assert retrained.exit_code == 0, retrained.stderr
    lines = _stage_lines(retrained.stdout)
    assert lines["sample"].startswith("current — skipped") and "redoing" in lines["train"]
    # round 2 is not run now, so none of its work is lost, but status no longer calls it done
    status = json.loads(dp2o_cli("status", str(copy), "--json").stdout)
    round_two = {s["stage"]: s for s in status["rounds"][0]["stages"]}
    assert round_two["sample"]["state"] == "stale" and round_two["train"]["state"] == "stale"
    assert "round 1 was retrained since" in round_two["sample"]["reason"]
    assert "beyond the 1 round(s) the run is configured for" in round_two["sample"]["reason"]
    # asking for it again would redo it
    refused = dp2o_cli("train", "--run", str(copy), "--rounds", "2")
    assert refused.exit_code == 2 and "sample (round 2): 2 finished group(s)" in refused.stderr


def test_a_deleted_tuned_model_is_damage_that_a_rerun_repairs(dp2o_cli, made, tmp_path):
    copy = _copy(made, tmp_path)
    final = copy / "train" / "final"
    weights = sorted(p.relative_to(final) for p in final.rglob("*"))
    shutil.rmtree(final)
    status = json.loads(dp2o_cli("status", str(copy), "--json").stdout)
    train = next(s for s in status["stages"] if s["stage"] == "train")
    assert train["state"] == "damaged" and "train/final is missing or empty" in train["reason"]
    repaired = dp2o_cli("train", "--run", str(copy))
    assert repaired.exit_code == 0, repaired.stderr
    assert (
        sorted(p.relative_to(copy / "train" / "final") for p in (copy / "train" / "final").rglob("*"))
        == weights
    )
    lines = _stage_lines(repaired.stdout)
    assert all(lines[f"{stage} (round 2)"].startswith("current — skipped") for stage in ("sample", "score"))


def _scores_csv(path: Path, rows: list[dict]) -> Path:
    pa.csv.write_csv(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("unknown-group", r"scores group 'nowhere', which the run did not sample"),
        ("beyond-m", r"has no candidate 3 \(the run sampled 3 per group, numbered 0–2"),
        ("text", r"column 'psnr' must hold a number"),
        ("nan", r"rejected \(the run is unchanged\).*missing 'psnr' score"),  # CSV reads nan as empty
        ("inf", r"rejected \(the run is unchanged\).*non-finite 'psnr' score \(inf\)"),
    ],
)
def test_a_rejected_score_import_leaves_the_runs_own_scores(dp2o_cli, made, tmp_path, change, message):
    copy = _copy(made, tmp_path)
    store = RunStore(copy)
    rows = store.read_table("score", "scores", columns=["group_id", "candidate", "psnr", "ssim"]).to_pylist()
    rows = [{**row, "psnr": str(row["psnr"])} for row in rows]
    if change == "unknown-group":
        rows += [{**rows[0], "group_id": "nowhere"}, {**rows[1], "group_id": "nowhere"}]
    elif change == "beyond-m":
        rows[0]["candidate"] = 3
    elif change == "text":
        rows[0]["psnr"] = "abc"
    elif change in ("nan", "inf"):
        rows[0]["psnr"] = change
    before = _fingerprints(copy)
    imported = dp2o_cli("pairs", str(copy), "--scores", str(_scores_csv(tmp_path / "bad.csv", rows)))
    assert imported.exit_code == 1, imported.stdout
    assert "Traceback" not in imported.stderr
    assert re.search(message, imported.stderr.replace("\n", " ")), imported.stderr
    assert _fingerprints(copy) == before and store.status("score").state == "done"


def test_a_second_command_on_a_run_in_use_stops_before_loading_anything(dp2o_cli, made, tmp_path):
    import os

    copy = _copy(made, tmp_path)
    before = _fingerprints(copy)
    with RunStore(copy).writer_lock():  # another command is working on the run
        other = dp2o_cli(*base_args(copy, "--data", "photos:split=train,crop=40,max_images=2", "--redo"))
        assert other.exit_code == 1
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in other.stderr
        assert "being written by another dp2o process" in other.stderr
        assert not other.stdout  # not even the stage announcements
        # reading the run is fine meanwhile
        assert dp2o_cli("status", str(copy)).exit_code == 0
    assert _fingerprints(copy) == before


def test_switching_a_rounds_data_does_what_the_flag_says(dp2o_cli, made, tmp_path):
    copy = _copy(made, tmp_path)
    round_two = copy / "rounds" / "2"
    assert (round_two / "data").is_symlink()
    refused = dp2o_cli("train", "--run", str(copy), "--fresh-data")
    assert refused.exit_code == 2 and "--fresh-data gives the round crops of its own" in refused.stderr

    fresh = dp2o_cli("train", "--run", str(copy), "--fresh-data", "--redo")
    assert fresh.exit_code == 0, fresh.stderr
    assert not (round_two / "data").is_symlink() and RunStore(round_two).status("data").state == "done"
    assert json.loads((copy / "config.json").read_text())["rounds"]["fresh_data"] is True
    assert RunStore(copy).status("data").state == "done"  # round 1's data untouched

    same = dp2o_cli("train", "--run", str(copy), "--same-data", "--redo")
    assert same.exit_code == 0, same.stderr
    assert (round_two / "data").is_symlink()
    assert json.loads((copy / "config.json").read_text())["rounds"]["fresh_data"] is False
    assert not list(round_two.glob(".trash-*")) and not list(copy.glob(".trash-*"))
    assert RunStore(copy).status("data").state == "done"


@pytest.mark.parametrize("damage", ["truncated", "list", "binary"])
def test_an_unreadable_configuration_record_is_an_error_not_the_defaults(dp2o_cli, made, tmp_path, damage):
    copy = _copy(made, tmp_path)
    record = copy / "config.json"
    text = record.read_bytes()
    record.write_bytes(
        {"truncated": text[: len(text) // 2], "list": b"[1, 2]", "binary": b"\xff\xfe\x00garbage"}[damage]
    )
    before = _fingerprints(copy)
    for command in (("pairs", str(copy)), ("score", str(copy)), ("train", "--run", str(copy))):
        result = dp2o_cli(*command)
        assert result.exit_code == 2, (command, result.stdout)
        assert f"configuration record {record} cannot be read" in result.stderr.replace("\n", " ")
        assert "Restore it from a copy" in result.stderr.replace("\n", " ")
    assert _fingerprints(copy) == before and record.read_bytes() != text


def test_train_warns_before_a_step_that_repeats_its_few_pairs_and_takes_warmup_steps(
    dp2o_cli, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    args = base_args(
        Path("run"), "--rounds", "1", "--batch-size", "16", "--warmup-steps", "10", "--max-steps", "1"
    )
    done = dp2o_cli(*args)
    assert done.exit_code == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "a step of 16 pairs (--batch-size) exceeds the run's 2 pairs" in text
    assert "warm-up of 10 steps is longer than the run's 1" in text
    assert json.loads((run / "config.json").read_text())["train"]["warmup_steps"] == 10
    # the printed upscale command works from any folder
    assert f"weights={run / 'train' / 'final'}'" in done.stdout.replace("\n", "")
