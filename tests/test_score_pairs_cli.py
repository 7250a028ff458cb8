"""``dp2o score`` and ``dp2o pairs`` on a run store; pairs from a scores table another tool wrote."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from candidates import write_candidates
from images import write_photos

from dp2o_core.store import RunStore


@pytest.fixture
def scored_run(dp2o_cli, sampled_run):
    result = dp2o_cli("score", str(sampled_run), "--reward", "hybrid-offline")
    assert result.exit_code == 0, result.stderr
    return sampled_run


def test_score_writes_one_column_per_metric_and_resumes(dp2o_cli, scored_run):
    store = RunStore(scored_run)
    table = store.read_table("score", "scores")
    assert set(table.column_names) == {"group_id", "candidate", "fsim", "vsi", "gmsd", "niqe", "piqe"}
    assert table.num_rows == 3 * 6
    metrics = json.loads((scored_run / "score" / "stage.json").read_text())["config"]["metrics"]
    assert {m["name"]: m["version"].startswith("pyiqa ") for m in metrics} == dict.fromkeys(
        ["fsim", "vsi", "gmsd", "niqe", "piqe"], True
    )
    again = dp2o_cli("score", str(scored_run), "--reward", "hybrid-offline")
    assert "(0 scored now)" in again.stdout


def test_pairs_from_run_and_recombination_without_rescoring(dp2o_cli, scored_run):
    store = RunStore(scored_run)
    first = dp2o_cli("pairs", str(scored_run), "--reward", "hybrid-offline", "--selector", "ratio=0.34")
    assert first.exit_code == 0, first.stderr
    assert "groups" in first.stdout and "reward gap mean" in first.stdout
    pairs = store.read_table("pairs", "pairs").to_pylist()
    assert len(pairs) == 3 * 4  # N = floor(0.34 · 6) = 2 → 4 pairs per group
    assert all(p["winner_reward"] > p["loser_reward"] for p in pairs)
    scores_before = store.status("score").fingerprint
    rewards_before = store.read_table("pairs", "rewards").column("reward").to_pylist()

    second = dp2o_cli(
        "pairs", str(scored_run), "--reward", "hybrid-offline:balance=0.9", "--selector", "ratio=0.34"
    )
    assert second.exit_code == 0, second.stderr
    assert store.status("score").fingerprint == scores_before and store.status("score").state == "done"
    assert store.read_table("pairs", "rewards").column("reward").to_pylist() != rewards_before
    assert store.status("pairs").state == "done"


def _write_scores(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)


def _table_rows():
    # group g1: metric "lpips" (lower better) and "maniqa"; g2 likewise.
    g1 = {"lpips": [0.1, 0.4, 0.2, 0.3], "maniqa": [0.5, 0.2, 0.6, 0.1]}
    g2 = {"lpips": [0.3, 0.3, 0.1, 0.5], "maniqa": [0.4, 0.4, 0.4, 0.4]}
    rows = []
    for group, values in (("g1", g1), ("g2", g2)):
        for m in range(4):
            rows.append(
                {
                    "group_id": group,
                    "candidate": m,
                    "lpips": values["lpips"][m],
                    "maniqa": values["maniqa"][m],
                }
            )
    return rows


def _expected():
    def norm(values, lower):
        v = [-x if lower else x for x in values]
        lo, hi = min(v), max(v)
        return [0.5] * len(v) if hi == lo else [(x - lo) / (hi - lo) for x in v]

    data = {g: {"lpips": [], "maniqa": []} for g in ("g1", "g2")}
    for row in _table_rows():
        data[row["group_id"]]["lpips"].append(row["lpips"])
        data[row["group_id"]]["maniqa"].append(row["maniqa"])
    rewards = {
        g: [0.5 * a + 0.5 * b for a, b in zip(norm(d["lpips"], True), norm(d["maniqa"], False), strict=True)]
        for g, d in data.items()
    }
    sigma = {g: math.sqrt(sum((r - sum(rs) / 4) ** 2 for r in rs) / 4) for g, rs in rewards.items()}
    mu = sum(sigma.values()) / 2
    expected = {}
    for g, rs in rewards.items():
        order = sorted(range(4), key=lambda i: (-rs[i], i))
        pairs = [(order[0], order[3])]  # ratio 0.25 of M = 4 → N = 1
        gaps = [abs(rs[w] - rs[lo]) for w, lo in pairs]
        intra = [gap + 1 - sum(gaps) / len(gaps) for gap in gaps]
        inter = sigma[g] + 1 - mu
        expected[g] = [
            (w, lo, rs[w], rs[lo], i, inter, i * inter) for (w, lo), i in zip(pairs, intra, strict=True)
        ]
    return expected


def test_pairs_on_a_scores_table_written_elsewhere(dp2o_cli, tmp_path):
    scores = tmp_path / "scores.parquet"
    _write_scores(scores, _table_rows())
    run = tmp_path / "run"
    result = dp2o_cli("pairs", str(run), "--scores", str(scores), "--reward", "hybrid:fr=[lpips],nr=[maniqa]")
    assert result.exit_code == 0, result.stderr
    got = RunStore(run).read_table("pairs", "pairs").to_pylist()
    for group, rows in _expected().items():
        (row,) = [r for r in got if r["group_id"] == group]
        (w, lo, rw, rl, intra, inter, weight) = rows[0]
        assert (row["winner"], row["loser"]) == (w, lo)
        for key, value in (
            ("winner_reward", rw),
            ("loser_reward", rl),
            ("intra_weight", intra),
            ("inter_weight", inter),
            ("weight", weight),
        ):
            assert abs(row[key] - value) <= 1e-12, key
    assert RunStore(run).status("pairs").state == "done"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda rows: [{k: v for k, v in r.items() if k != "maniqa"} for r in rows],
            "has no column 'maniqa'",
        ),
        (
            lambda rows: [{**r, "lpips": float("nan")} if r["candidate"] == 2 else r for r in rows],
            "non-finite 'lpips' score (nan) for candidate 2 of group 'g1'",
        ),
        (
            lambda rows: [r for r in rows if r["group_id"] == "g1" or r["candidate"] == 0],
            "group 'g2' has 1 candidate",
        ),
    ],
    ids=["missing-column", "nan", "single-candidate"],
)
def test_bad_scores_tables_are_named_and_nothing_is_written(dp2o_cli, tmp_path, edit, message):
    scores = tmp_path / "scores.parquet"
    _write_scores(scores, edit(_table_rows()))
    run = tmp_path / "run"
    result = dp2o_cli("pairs", str(run), "--scores", str(scores), "--reward", "hybrid:fr=[lpips],nr=[maniqa]")
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert RunStore(run).status("pairs").state == "missing"


def test_unknown_metric_in_the_reward_is_a_usage_error(dp2o_cli, tmp_path):
    scores = tmp_path / "scores.parquet"
    _write_scores(scores, _table_rows())
    result = dp2o_cli(
        "pairs", str(tmp_path / "run"), "--scores", str(scores), "--reward", "hybrid:fr=[lpipss],nr=[]"
    )
    assert result.exit_code == 2
    assert "unknown pyiqa metric 'lpipss'. Did you mean 'lpips'?" in result.stderr


def test_a_truncated_commit_record_makes_the_stage_damaged_and_pairs_refuse(dp2o_cli, scored_run):
    store = RunStore(scored_run)
    commit = store.commits("score")[0]
    commit.path.write_text(commit.path.read_text()[:15])
    status = json.loads(dp2o_cli("status", str(scored_run), "--json").stdout)["stages"][2]
    assert status["stage"] == "score" and status["state"] == "damaged", status
    assert status["groups_done"] == 0 and "unreadable" in status["reason"]
    refused = dp2o_cli("pairs", str(scored_run), "--reward", "hybrid-offline")
    assert refused.exit_code == 1 and "damaged" in refused.stderr, refused.stderr
    redone = dp2o_cli("score", str(scored_run), "--reward", "hybrid-offline")
    assert redone.exit_code == 0 and "(3 scored now)" in redone.stdout, redone.stdout + redone.stderr
    assert store.status("score").state == "done"


def test_a_candidate_deleted_from_the_run_is_a_damaged_sample_stage_not_a_bad_input(dp2o_cli, tmp_path):
    folder, run = tmp_path / "imgs", tmp_path / "run"
    write_photos(folder, ("astronaut", "chelsea"), size=96)
    assert dp2o_cli("prepare", str(run), "--data", f"hr:path={folder},crop=96").exit_code == 0
    store = RunStore(run)
    write_candidates(store)
    missing = store.group_path("sample", "images", "chelsea", "003.png")
    missing.unlink()
    result = dp2o_cli("score", str(run), "--reward", "hybrid-offline")
    assert result.exit_code == 1
    assert "stage 'sample'" in result.stderr and "is damaged" in result.stderr and "003.png" in result.stderr
    assert "--on-bad-image" not in result.stderr and "Traceback" not in result.stderr
    assert store.status("sample").state == "damaged"
    write_candidates(store)  # what rerunning the sample stage does: only the damaged commit's groups
    assert missing.exists() and store.status("sample").state == "done"
    assert dp2o_cli("score", str(run), "--reward", "hybrid-offline").exit_code == 0


def test_status_verify_finds_a_deleted_lr_image(dp2o_cli, tmp_path):
    folder, run = tmp_path / "imgs", tmp_path / "run"
    write_photos(folder, ("astronaut", "chelsea"), size=64)
    assert dp2o_cli("prepare", str(run), "--data", f"hr:path={folder},crop=64").exit_code == 0
    store = RunStore(run)
    store.group_path("data", "lr", "chelsea", suffix=".png").unlink()
    assert store.status("data").state == "done"  # a plain status does not look at images
    result = dp2o_cli("status", str(run), "--verify", "--json")
    record = json.loads(result.stdout)
    assert record["stages"][0]["state"] == "damaged"
    assert [(f["stage"], f["group_id"], f["problem"]) for f in record["damaged_files"]] == [
        ("data", "chelsea", "is missing")
    ]
    redo = dp2o_cli("prepare", str(run), "--data", f"hr:path={folder},crop=64")
    assert redo.exit_code == 0 and store.status("data").state == "done"
    assert "every file the stages wrote is there" in dp2o_cli("status", str(run), "--verify").stdout
