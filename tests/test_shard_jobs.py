"""Shard jobs (``--shard K/N``) in the run store: N jobs started separately fill one run.

The jobs here are processes of ``stage_script.py`` (no model, so they are quick to start and
to kill at a chosen moment); ``test_shard_cli.py`` runs the real commands.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest
from test_runstore import finish, run_script, sorted_rows

from dp2o_core.store import ProcessInfo, RunStore
from dp2o_core.store.lock import StageLock, StageLockedError, probe_holder
from dp2o_core.store.runstore import ShardMismatchError
from dp2o_core.store.sharding import Shard

GROUPS = [f"img/{i:04d}" for i in range(30)]


def shard_job(run, k: int, n: int, pause: float = 0.0, count: int = 30, tag: str = "a"):
    return run_script(run, count, pause=pause, tag=tag, env={"SHARD": f"{k}/{n}"})


def wait_until(condition, process, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, f"the job ended before {what}: {process.communicate()[1]}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def test_a_shard_owns_every_nth_group_the_way_processes_of_one_job_do():
    ordered = sorted(GROUPS)
    for k in range(4):
        assert ProcessInfo(shard=Shard(k, 4)).share(GROUPS) == ProcessInfo(k, 4).share(GROUPS)
    # a shard job that is itself two processes splits its shard again, without overlap
    inner = [ProcessInfo(r, 2, Shard(1, 4)).share(GROUPS) for r in range(2)]
    assert sorted(inner[0] + inner[1]) == ordered[1::4] and not set(inner[0]) & set(inner[1])
    assert Shard.parse(" 3 / 8 ") == Shard(3, 8) and str(Shard(3, 8)) == "3/8"
    for bad in ("8/8", "3", "-1/4", "a/b"):
        with pytest.raises(ValueError, match="K/N|counts from 0"):
            Shard.parse(bad)


def test_jobs_started_apart_and_one_killed_give_the_tables_of_one_process(tmp_path):
    reference = tmp_path / "reference"
    finish(run_script(reference, 30))

    run = tmp_path / "sharded"
    jobs = {k: shard_job(run, k, 3, pause=0.03) for k in (0, 1)}
    time.sleep(0.3)
    jobs[2] = shard_job(run, 2, 3, pause=0.03)  # started later, as an array task would be
    store = RunStore(run)
    wait_until(
        lambda: any(c.writer.startswith("s001-003") for c in store.commits("data")), jobs[1], "a commit"
    )
    jobs[1].send_signal(signal.SIGKILL)  # a preempted node
    jobs[1].wait()
    finish(jobs[0])
    finish(jobs[2])

    status = store.status("data")
    assert status.state == "partial" and 10 < status.groups_done < 30
    progress = {str(p.shard): p for p in store.shard_progress("data")}
    assert progress["0/3"].finished and progress["2/3"].finished
    assert not progress["1/3"].finished and progress["1/3"].holder is None
    assert "shard 1/3" in store.unfinished_shards("data") and "shard 0/3" not in store.unfinished_shards(
        "data"
    )

    finish(shard_job(run, 1, 3))  # restarted: it does the rest of its shard only
    assert store.status("data").state == "done"
    assert store.status("data").groups_done == 30
    assert sorted_rows(store) == sorted_rows(RunStore(reference))
    assert {c.writer for c in store.commits("data")} == {"s000-003.p000", "s001-003.p000", "s002-003.p000"}
    assert not list(run.rglob("*.tmp"))


def test_the_last_job_to_finish_marks_the_stage_done_whichever_it_is(tmp_path):
    run = tmp_path / "run"
    for k in (2, 0, 1):  # one after the other, in any order
        finish(shard_job(run, k, 3))
        state = RunStore(run).status("data").state
        assert state == ("done" if k == 1 else "partial")
    assert json.loads((run / "data" / "complete.json").read_text())["groups"] == 30


def test_a_second_job_on_the_same_shard_names_the_first(tmp_path):
    run = tmp_path / "run"
    first = shard_job(run, 0, 2, pause=0.2)
    lock = RunStore(run).stage_lock("data", ProcessInfo(shard=Shard(0, 2))).path
    # the job takes its lock before it records the split (shards.json): wait for both
    wait_until(
        lambda: lock.exists() and probe_holder(lock) is not None and RunStore(run).shard_progress("data"),
        first,
        "the first job's lock and split",
    )
    running = RunStore(run).shard_progress("data")[0]  # what dp2o status shows
    assert not running.finished and f"pid {first.pid}" in (running.holder or "")
    assert f"running (pid {first.pid} on host" in running.describe()
    second = shard_job(run, 0, 2)
    _, err = second.communicate(timeout=60)
    first.kill()
    first.wait()
    assert second.returncode != 0
    assert f"pid {first.pid} on host {socket.gethostname()}" in err and "shard 0/2" in err


def test_shard_jobs_share_the_run_lock_and_a_whole_run_command_is_refused_naming_them(tmp_path):
    store = RunStore(tmp_path / "run")
    shard = ProcessInfo(shard=Shard(1, 4))
    with store.writer_lock(shared=True), store.writer_lock(shared=True), store.stage_lock("sample", shard):
        with pytest.raises(StageLockedError, match=r"shard jobs: sample shard 1/4 \(pid \d+ on host"):
            store.writer_lock().__enter__()
    with store.writer_lock():  # none left: the run is free again
        with pytest.raises(StageLockedError, match=f"pid {os.getpid()}"):
            store.writer_lock(shared=True).__enter__()


def test_a_job_with_other_settings_or_another_split_is_refused_before_writing(tmp_path):
    store = RunStore(tmp_path / "run")

    def write(config, shard):
        with store.open_stage("data", config=config, group_ids=GROUPS, process=ProcessInfo(shard=shard)) as w:
            for group in w.todo:
                w.add_group(group, values=[{"x": 1}])

    write({"tag": "a"}, Shard(0, 3))
    before = sorted(p.relative_to(store.root) for p in store.root.rglob("*") if "locks" not in p.parts)
    with pytest.raises(ShardMismatchError, match="other settings"):
        write({"tag": "b"}, Shard(1, 3))
    after = sorted(p.relative_to(store.root) for p in store.root.rglob("*") if "locks" not in p.parts)
    assert after == before

    # another N while a job of the first split runs: refused, naming that job
    with StageLock(store.stage_lock("data", ProcessInfo(shard=Shard(2, 3))).path, "x"):
        with pytest.raises(ShardMismatchError, match=r"split into 3, not 2: data shard 2/3 \(pid"):
            write({"tag": "a"}, Shard(1, 2))
    # once none runs the split may change; groups already done stay done
    write({"tag": "a"}, Shard(1, 2))
    write({"tag": "a"}, Shard(0, 2))
    assert store.status("data").state == "done"
    assert len(store.read_table("data", "values")) == 30
