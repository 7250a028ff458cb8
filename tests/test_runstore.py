"""The run store: commits, union reads, resume after SIGKILL, sharding, locks, fingerprints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dp2o_core.errors import Dp2oError
from dp2o_core.store import ProcessInfo, RunStore
from dp2o_core.store.lock import StageLockedError

SCRIPT = Path(__file__).with_name("stage_script.py")


def run_script(run: Path, count: int, pause: float = 0.0, tag: str = "a", env: dict | None = None):
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(run), str(count), str(pause), tag],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process) -> None:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err


def sorted_rows(store: RunStore) -> list[tuple]:
    table = store.read_table("data", "values").to_pylist()
    return sorted((r["group_id"], r["k"], r["value"], r["file"]) for r in table)


def write_groups(store: RunStore, stage: str, groups, config, process=None, **kwargs):
    with store.open_stage(stage, config=config, group_ids=groups, process=process, **kwargs) as writer:
        for group in writer.todo:
            writer.add_group(group, values=[{"x": len(group)}])
    return writer


def test_killed_stage_resumes_to_the_same_result(tmp_path):
    reference = tmp_path / "reference"
    finish(run_script(reference, 40))

    run = tmp_path / "killed"
    process = run_script(run, 40, pause=0.05)
    deadline = time.monotonic() + 60
    while len(RunStore(run).commits("data")) < 3:
        assert time.monotonic() < deadline and process.poll() is None, "stage ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()

    store = RunStore(run)
    status = store.status("data")
    assert status.state == "partial"
    assert 9 <= status.groups_done < 40

    finish(run_script(run, 40))
    status = store.status("data")
    assert status.state == "done" and status.groups_done == 40 and status.groups_total == 40
    rows = sorted_rows(store)
    assert len(rows) == 80 and len({(g, k) for g, k, _, _ in rows}) == 80  # nothing lost, nothing doubled
    assert rows == sorted_rows(RunStore(reference))
    for _, _, _, file in rows:
        assert (run / file).read_text().endswith(" a\n")  # every file readable and complete
    assert not list(run.rglob("*.tmp"))


def test_two_processes_share_the_groups_without_overlap(tmp_path):
    run = tmp_path / "run"
    processes = [run_script(run, 25, env={"RANK": str(i), "WORLD_SIZE": "2"}) for i in range(2)]
    for process in processes:
        finish(process)
    store = RunStore(run)
    assert store.status("data").state == "done"
    commits = store.commits("data")
    by_process = {p: {g for c in commits if c.writer == f"p{p:03d}" for g in c.groups} for p in (0, 1)}
    assert by_process[0] and by_process[1]
    assert not by_process[0] & by_process[1]
    assert by_process[0] | by_process[1] == {f"img/{i:04d}" for i in range(25)}
    assert by_process[1] == set(ProcessInfo(1, 2).share([f"img/{i:04d}" for i in range(25)]))
    assert len(sorted_rows(store)) == 50


def test_share_is_stable_and_skips_done_groups():
    groups = [f"g{i}" for i in range(10)]
    shares = [ProcessInfo(i, 3).share(groups) for i in range(3)]
    assert sorted(sum(shares, [])) == sorted(groups)
    assert ProcessInfo(1, 3).share(list(reversed(groups))) == shares[1]
    assert ProcessInfo(1, 3).share(groups, done={shares[1][0]}) == shares[1][1:]
    assert ProcessInfo.detect({"RANK": "1", "WORLD_SIZE": "4"}) == ProcessInfo(1, 4)
    assert ProcessInfo.detect({}) == ProcessInfo(0, 1)


def test_rerun_of_a_done_stage_does_nothing(tmp_path):
    store = RunStore(tmp_path)
    write_groups(store, "data", ["a", "b"], {"v": 1})
    writer = write_groups(store, "data", ["a", "b"], {"v": 1})
    assert writer.todo == [] and writer.committed_groups == 0
    assert store.status("data").state == "done"


def test_changing_a_stage_marks_it_and_later_stages_stale_and_nothing_else(tmp_path):
    store = RunStore(tmp_path)
    write_groups(store, "data", ["a", "b"], {"v": 1})
    write_groups(store, "sample", ["a", "b"], {"m": 4})
    write_groups(store, "score", ["a", "b"], {"metric": "niqe"})
    assert [s.state for s in store.statuses()[:3]] == ["done"] * 3

    # A new option for 'sample': it is stale for that config; 'data' is untouched.
    assert store.status("sample", expected=store.expected_fingerprint("sample", {"m": 8})).state == "stale"
    assert store.status("data", expected=store.expected_fingerprint("data", {"v": 1})).state == "done"
    write_groups(store, "sample", ["a", "b"], {"m": 8})
    assert store.status("data").state == "done"
    assert store.status("sample").state == "done"
    score = store.status("score")
    assert score.state == "stale" and score.reason == "upstream stage 'sample' changed"

    # Changing 'data' makes everything after it stale.
    write_groups(store, "data", ["a", "b"], {"v": 2})
    assert [s.state for s in store.statuses()[:3]] == ["done", "stale", "stale"]


def test_stale_stage_is_cleared_before_it_is_redone(tmp_path):
    store = RunStore(tmp_path)
    write_groups(store, "data", ["a", "b", "c"], {"v": 1})
    write_groups(store, "data", ["a"], {"v": 2})
    assert store.status("data").groups_done == 1
    assert store.read_table("data", "values").num_rows == 1
    assert not list(tmp_path.glob(".trash-*"))


def test_downstream_stage_needs_a_done_upstream(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(Dp2oError, match="reads stage 'data'.*which is missing. Run 'data' first"):
        write_groups(store, "sample", ["a"], {})


def test_second_writer_is_stopped_by_the_lock(tmp_path):
    store = RunStore(tmp_path)
    with store.open_stage("data", config={}, group_ids=["a"], process=ProcessInfo()) as writer:
        with pytest.raises(StageLockedError) as error:
            store.open_stage("data", config={}, group_ids=["a"], process=ProcessInfo()).__enter__()
        writer.add_group("a", values=[{"x": 1}])
    message = str(error.value)
    assert f"pid {os.getpid()}" in message
    assert "delete" in message and "data.p000.lock" in message
    write_groups(store, "data", ["a"], {})  # released on exit


def test_uncommitted_parts_are_never_read(tmp_path):
    store = RunStore(tmp_path)
    write_groups(store, "data", ["a", "b"], {}, flush_every=1)
    (commit,) = [c for c in store.commits("data") if "b" in c.groups]
    commit.path.unlink()  # as if killed between writing the part and committing it
    assert store.done_groups("data") == {"a"}
    assert store.read_table("data", "values").column("group_id").to_pylist() == ["a"]


def test_a_group_committed_twice_is_read_once(tmp_path):
    store = RunStore(tmp_path)
    write_groups(store, "data", ["a", "b"], {}, flush_every=2)
    (commit,) = store.commits("data")
    other = commit.path.parent.parent.parent / "p001" / "0000"
    other.mkdir(parents=True)
    for name in [commit.path.name, *commit.tables.values()]:
        (other / name).write_bytes((commit.path.parent / name).read_bytes())
    assert len(store.commits("data")) == 2
    assert sorted(store.read_table("data", "values").column("group_id").to_pylist()) == ["a", "b"]


def test_parts_and_group_files_are_spread_over_folders(tmp_path, monkeypatch):
    from dp2o_core.store import runstore

    monkeypatch.setattr(runstore, "PARTS_PER_FOLDER", 2)
    store = RunStore(tmp_path)
    write_groups(store, "data", [f"g{i}" for i in range(10)], {}, flush_every=1)
    folders = {c.path.parent.name for c in store.commits("data")}
    assert folders == {"0000", "0001", "0002", "0003", "0004"}
    paths = {store.group_path("data", "lr", f"g{i}").parent.name for i in range(200)}
    assert 100 < len(paths) <= 256


def test_status_record_has_stable_keys(tmp_path):
    store = RunStore(tmp_path)
    write_groups(store, "data", ["a"], {"v": 1})
    record = store.status("data").as_record()
    assert set(record) == {
        "stage",
        "state",
        "fingerprint",
        "inputs",
        "groups_done",
        "groups_total",
        "rows",
        "updated",
        "reason",
    }
    assert record["rows"] == {"values": 1}
    assert json.loads((tmp_path / "data" / "stage.json").read_text())["config"] == {"v": 1}


def test_duplicate_group_ids_are_refused(tmp_path):
    with pytest.raises(Dp2oError, match="group ids are not unique: a"):
        RunStore(tmp_path).open_stage("data", config={}, group_ids=["a", "b", "a"])


def test_group_file_names_are_distinct_for_distinct_ids(tmp_path):
    from dp2o_core.store.runstore import safe_name

    store = RunStore(tmp_path)
    ids = [f"frame.{i:04d}" for i in range(1, 41)] + ["shot.v9", "shot.v10", "img 7", "img_7", "img%207"]
    ids += ["a/b", "a__b", "a_b", ".", "..", ".hidden", "", "é", "e\u0301", "x" * 300, "x" * 299 + "y"]
    names = [store.group_path("data", "lr", g, suffix=".png") for g in ids]
    assert len(set(names)) == len(ids)
    for stage, subdir, suffix in (
        ("sample", "latents", ".safetensors"),
        ("sample", "conditions", ".safetensors"),
    ):
        assert len({store.group_path(stage, subdir, g, suffix=suffix) for g in ids}) == len(ids)
    assert len({store.group_path("sample", "images", g, "000.png") for g in ids}) == len(ids)
    assert all(n.parent.parent == tmp_path / "data" / "lr" for n in names)  # never escapes its folder
    assert store.group_path("data", "lr", "frame.0007", suffix=".png").name == "frame.0007.png"
    assert safe_name("img 7") == "img%207" and safe_name("img_7") == "img_7"
    assert not any(safe_name(g).startswith(".") for g in ids)
    assert all(len(safe_name(g)) <= 160 for g in ids)


def _finished_stage(tmp_path, groups=20):
    store = RunStore(tmp_path)
    ids = [f"g{i:02d}" for i in range(groups)]
    write_groups(store, "data", ids, {}, flush_every=4)
    assert store.status("data").state == "done"
    return store, ids


@pytest.mark.parametrize("damage", ["truncate-record", "delete-part", "truncate-part", "swap-part"])
def test_a_damaged_commit_is_never_done_and_a_rerun_redoes_exactly_its_groups(tmp_path, damage):
    store, ids = _finished_stage(tmp_path)
    commit = store.commits("data")[2]
    part = commit.path.parent / commit.tables["values"]
    if damage == "truncate-record":
        commit.path.write_text(commit.path.read_text()[:20])
    elif damage == "delete-part":
        part.unlink()
    elif damage == "truncate-part":
        part.write_bytes(part.read_bytes()[:-10])
    else:  # another commit's part file in its place: a different size
        other = store.commits("data")[0]
        rows = [{"x": 1, "group_id": "zz"}] * 9
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), part)
        assert other.path.exists()
    status = store.status("data")
    assert status.state == "damaged" and status.groups_done == 16, status
    assert "damaged commit" in status.reason and "part-0000002" in status.reason
    with pytest.raises(Dp2oError, match="damaged"):
        store.expected_fingerprint("sample", {})  # a downstream stage refuses to read it
    redone = []
    with store.open_stage("data", config={}, group_ids=ids) as writer:
        assert writer.todo == list(commit.groups)
        for group in writer.todo:
            redone.append(group)
            writer.add_group(group, values=[{"x": len(group)}])
    assert store.status("data").state == "done"
    assert sorted(store.read_table("data", "values").column("group_id").to_pylist()) == ids
    assert list((tmp_path / "data" / "damaged").glob("*/p000/0000/part-0000002.commit.json"))


def test_a_file_found_missing_when_read_damages_its_group_and_names_the_fix(tmp_path):
    store, ids = _finished_stage(tmp_path, groups=8)
    path = store.group_path("data", "files", "g05", suffix=".txt")
    with pytest.raises(
        Dp2oError, match=r"stage 'data' .* is damaged: data/files/.*g05\.txt \(group 'g05'\) is missing"
    ):
        store.load_group_file("data", "g05", store.relative(path), lambda p: p.read_text())
    status = store.status("data")
    assert status.state == "damaged" and status.groups_done == 4
    with store.open_stage("data", config={}, group_ids=ids) as writer:
        assert writer.todo == ["g04", "g05", "g06", "g07"]  # the commit holding g05
        for group in writer.todo:
            writer.add_group(group, values=[{"x": len(group)}])
    assert store.status("data").state == "done"


def test_a_stage_record_without_fingerprint_is_stale_not_a_traceback(tmp_path):
    store, _ = _finished_stage(tmp_path, groups=4)
    record = json.loads((tmp_path / "data" / "stage.json").read_text())
    del record["fingerprint"]
    (tmp_path / "data" / "stage.json").write_text(json.dumps(record))
    status = store.status("data")
    assert status.state == "stale" and "no fingerprint" in status.reason


def test_a_corrupt_part_file_of_the_right_size_is_named_when_read(tmp_path):
    store, _ = _finished_stage(tmp_path, groups=8)
    part = store.commits("data")[1].path.parent / store.commits("data")[1].tables["values"]
    part.write_bytes(b"\0" * part.stat().st_size)  # same size, nothing readable
    with pytest.raises(Dp2oError, match=r"part file data/parts/p000/0000/part-0000001\.values\.parquet"):
        store.read_table("data", "values")
