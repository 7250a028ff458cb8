"""``dp2o sample --shard K/N`` and ``dp2o score --shard K/N``: jobs started apart fill one run,
``dp2o status`` shows each shard, and the stages after them wait for every shard."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from images import write_photos
from safetensors.torch import load_file

from dp2o_core.imageio import read_image
from dp2o_core.store import ProcessInfo, RunStore
from dp2o_core.store.sharding import Shard

CANDIDATE_COLUMNS = ("group_id", "candidate", "seed", "image", "latent_shard", "latent_index")


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "imgs"
    write_photos(folder, ("astronaut", "coffee", "chelsea", "rocket", "camera", "cat"), size=64)
    return folder


def sampling(tiny_sd) -> tuple[str, ...]:
    spec = f"sd2:model={tiny_sd},steps=2,device=cpu,geometry=exact,controlnet=new"
    return ("--backbone", spec, "-m", "2", "--seed", "3")


def candidates(run: Path) -> list[tuple]:
    table = RunStore(run).read_table("sample", "candidates", columns=list(CANDIDATE_COLUMNS)).to_pylist()
    return sorted(tuple(row[c] for c in CANDIDATE_COLUMNS) for row in table)


def files_outside_locks(run: Path) -> list[tuple[str, int]]:
    return sorted(
        (str(p.relative_to(run)), p.stat().st_mtime_ns)
        for p in run.rglob("*")
        if p.is_file() and "locks" not in p.relative_to(run).parts
    )


def test_sample_shard_jobs_started_separately_give_the_candidates_of_one_job(
    dp2o_cli, tiny_sd, photos, tmp_path
):
    one, data = tmp_path / "one", f"hr:path={photos},crop=64"
    assert dp2o_cli("sample", str(one), "--data", data, *sampling(tiny_sd)).exit_code == 0
    run = tmp_path / "sharded"
    assert dp2o_cli("prepare", str(run), "--data", data, "--seed", "3").exit_code == 0  # the data of `one`
    script = Path(sys.executable).with_name("dp2o")
    jobs = [
        subprocess.Popen(
            [str(script), "sample", str(run), *sampling(tiny_sd), "--shard", f"{k}/2"],
            env={k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    for job in jobs:
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0, err
        assert "by shard" in out
    assert RunStore(run).status("sample").state == "done"
    assert candidates(run) == candidates(one)
    for group, candidate, _, image, shard, _ in candidates(one):
        assert (read_image(run / image) == read_image(one / image)).all(), (group, candidate)
        assert torch.equal(load_file(str(run / shard))["latents"], load_file(str(one / shard))["latents"])
    status = dp2o_cli("status", str(run))
    assert "sample: 2 shard jobs — all finished" in status.stdout


def test_a_missing_shard_is_named_everywhere_and_nothing_is_written_by_a_refused_job(
    dp2o_cli, tiny_sd, photos, tmp_path
):
    run = tmp_path / "run"
    assert dp2o_cli("prepare", str(run), "--data", f"hr:path={photos},crop=64").exit_code == 0
    for k in (0, 1):
        done = dp2o_cli("sample", str(run), *sampling(tiny_sd), "--shard", f"{k}/3")
        assert done.exit_code == 0, done.stderr
        assert "sample: partial — " in done.stdout
    status = dp2o_cli("status", str(run))
    assert "3 shard jobs — 2 finished, 0 running, 1 missing" in status.stdout
    assert "shard 2/3: 2 of 2 groups left, no job running" in status.stdout
    stages = json.loads(dp2o_cli("status", str(run), "--json").stdout)["stages"]
    shards = {s["stage"]: s.get("shards") for s in stages}
    assert [s["finished"] for s in shards["sample"]] == [True, True, False]

    before = files_outside_locks(run)
    other = dp2o_cli("sample", str(run), *sampling(tiny_sd)[:-4], "-m", "3", "--seed", "3", "--shard", "2/3")
    assert other.exit_code == 2
    assert "shard 2/3: stage 'sample'" in other.stderr and "num_candidates: 2 → 3" in other.stderr
    assert "Nothing was written" in other.stderr
    redo = dp2o_cli("sample", str(run), *sampling(tiny_sd), "--shard", "2/3", "--redo")
    assert redo.exit_code == 2 and "--redo cannot be given with --shard 2/3" in redo.stderr
    with RunStore(run).stage_lock("sample", ProcessInfo(shard=Shard(2, 3))):
        taken = dp2o_cli("sample", str(run), *sampling(tiny_sd), "--shard", "2/3")
    assert taken.exit_code == 1 and f"pid {os.getpid()} on host" in taken.stderr
    train = dp2o_cli("train", "--run", str(run), "--reward", "hybrid-offline", "--max-steps", "1")
    assert train.exit_code == 2
    assert "being filled by shard jobs" in train.stderr and "shard 2/3: 2 of 2 groups left" in train.stderr
    score = dp2o_cli("score", str(run), "--reward", "hybrid-offline", "--shard", "0/2")
    assert score.exit_code == 75  # EX_TEMPFAIL: the sampling it reads is still being made; try later
    assert "reads stage 'sample'" in score.stderr and "shard 2/3" in score.stderr
    assert files_outside_locks(run) == before  # every refusal wrote nothing

    last = dp2o_cli("sample", str(run), *sampling(tiny_sd), "--shard", "2/3")
    assert last.exit_code == 0 and "sample: done — 6/6 groups (2 sampled now by shard 2/3)" in last.stdout


def test_score_shard_jobs_fill_the_scores_and_pairs_wait_for_every_shard(dp2o_cli, sampled_run, tmp_path):
    one = tmp_path / "one"
    shutil.copytree(sampled_run, one)
    assert dp2o_cli("score", str(one), "--reward", "hybrid-offline").exit_code == 0

    first = dp2o_cli("score", str(sampled_run), "--reward", "hybrid-offline", "--shard", "0/2")
    assert first.exit_code == 0, first.stderr
    pairs = dp2o_cli("pairs", str(sampled_run), "--reward", "hybrid-offline")
    assert pairs.exit_code != 0
    assert "reads stage 'score'" in pairs.stderr and "shard 1/2: 1 of 1 groups left" in pairs.stderr
    assert f"dp2o score {sampled_run} --shard 1/2" in pairs.stderr
    assert dp2o_cli("score", str(sampled_run), "--reward", "hybrid-offline", "--shard", "1/2").exit_code == 0

    def scores(run: Path) -> list[dict]:
        rows = RunStore(run).read_table("score", "scores").to_pylist()
        return sorted(rows, key=lambda r: (r["group_id"], r["candidate"]))

    assert scores(sampled_run) == scores(one)
    assert dp2o_cli("pairs", str(sampled_run), "--reward", "hybrid-offline").exit_code == 0
