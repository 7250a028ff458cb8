"""``dp2o prepare`` and ``dp2o status`` on real photographs, bad files, reruns and two processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from conftest import run_dp2o
from images import write_photos

from dp2o_core.imageio import read_image
from dp2o_core.store import RunStore


def _folder(tmp_path):
    folder = tmp_path / "imgs"
    write_photos(folder, ("astronaut", "chelsea", "coffee", "rocket"), size=96)
    return folder


def test_prepare_writes_lr_and_hr_and_status_reports_done(dp2o_cli, tmp_path):
    folder, run = _folder(tmp_path), tmp_path / "run"
    result = dp2o_cli("prepare", str(run), "--data", f"hr:path={folder},crop=64", "--seed", "3")
    assert result.exit_code == 0, result.stderr
    assert "data: done — 4/4 items" in result.stdout
    store = RunStore(run)
    rows = store.read_table("data", "groups").to_pylist()
    assert sorted(r["group_id"] for r in rows) == ["astronaut", "chelsea", "coffee", "rocket"]
    for row in rows:
        assert read_image(run / row["lr"]).shape == (16, 16, 3)
        assert read_image(run / row["hr"]).shape == (64, 64, 3)
        assert row["source_hr"].startswith(str(folder))
    config = json.loads((run / "config.json").read_text())
    assert config["seed"] == 3
    assert config["components"]["degradation"]["name"] == "realesrgan"
    assert config["components"]["data"]["options"]["crop"] == 64

    status = json.loads(dp2o_cli("status", str(run), "--json").stdout)
    data = status["stages"][0]
    assert data["stage"] == "data" and data["state"] == "done"
    assert data["groups_done"] == data["groups_total"] == 4
    assert [s["state"] for s in status["stages"][1:]] == ["missing"] * 5  # sample … eval
    assert "done" in dp2o_cli("status", str(run)).stdout


def test_rerun_skips_and_changed_degradation_redoes(dp2o_cli, tmp_path):
    folder, run = _folder(tmp_path), tmp_path / "run"
    dp2o_cli("prepare", str(run), "--data", f"hr:path={folder},crop=64")
    lr_before = read_image(RunStore(run).group_path("data", "lr", "coffee", suffix=".png"))
    again = dp2o_cli("prepare", str(run), "--data", f"hr:path={folder},crop=64")
    assert "0 written now, 4 already done" in again.stdout
    changed = dp2o_cli("prepare", str(run), "--data", f"hr:path={folder},crop=64", "--degradation", "bicubic")
    assert "4 written now, 0 already done" in changed.stdout
    lr_after = read_image(RunStore(run).group_path("data", "lr", "coffee", suffix=".png"))
    assert not np.array_equal(lr_before, lr_after)


def test_bad_image_stops_with_its_name_then_skip_lists_it(dp2o_cli, tmp_path):
    folder, run = _folder(tmp_path), tmp_path / "run"
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    failed = dp2o_cli("prepare", str(run), "--data", f"hr:path={folder},crop=64", "--batch-size", "1")
    assert failed.exit_code == 1
    assert f"Error: bad image {folder / 'broken.png'}" in failed.stderr
    assert "--on-bad-image skip" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert RunStore(run).status("data").state == "partial"
    assert RunStore(run).status("data").groups_done == 1  # astronaut; broken (next by id) stopped it

    skipped = dp2o_cli("prepare", str(run), "--data", f"hr:path={folder},crop=64", "--on-bad-image", "skip")
    assert skipped.exit_code == 0, skipped.stderr
    assert "1 skipped images" in skipped.stdout and "broken.png" in skipped.stdout
    store = RunStore(run)
    assert store.status("data").state == "done"
    assert store.read_table("data", "bad_images").to_pylist()[0]["path"] == str(folder / "broken.png")
    assert store.read_table("data", "groups").num_rows == 4


def test_missing_data_option_is_a_usage_error(dp2o_cli, tmp_path):
    result = dp2o_cli("prepare", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "no data set given: pass --data SPEC" in result.stderr
    result = dp2o_cli("status", str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_two_processes_give_the_same_tables_as_one(plugin_env, tmp_path):
    folder = _folder(tmp_path)
    spec = f"hr:path={folder},crop=64,crop_mode=random"
    single = run_dp2o("prepare", str(tmp_path / "single"), "--data", spec, env=plugin_env)
    assert single.returncode == 0, single.stderr
    script = os.fspath(os.path.join(os.path.dirname(sys.executable), "dp2o"))
    processes = [
        subprocess.Popen(
            [script, "prepare", str(tmp_path / "double"), "--data", spec],
            env={**plugin_env, "RANK": str(rank), "WORLD_SIZE": "2"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    one, two = RunStore(tmp_path / "single"), RunStore(tmp_path / "double")
    assert two.status("data").state == "done"
    assert {c.writer for c in two.commits("data")} == {"p000", "p001"}
    rows_one = sorted(one.read_table("data", "groups").to_pylist(), key=lambda r: r["group_id"])
    rows_two = sorted(two.read_table("data", "groups").to_pylist(), key=lambda r: r["group_id"])
    assert rows_one == rows_two
    for row in rows_one:
        assert np.array_equal(
            read_image(tmp_path / "single" / row["lr"]), read_image(tmp_path / "double" / row["lr"])
        )


def test_a_frame_sequence_keeps_one_file_per_frame(dp2o_cli, tmp_path):
    from images import photo
    from PIL import Image

    folder, run = tmp_path / "frames", tmp_path / "run"
    folder.mkdir()
    base = photo("astronaut", 64)
    for i in range(1, 41):  # frame.0001.png … frame.0040.png: ids differ only after a dot
        Image.fromarray(np.roll(base, 3 * i, axis=1)).save(folder / f"frame.{i:04d}.png")
    result = dp2o_cli("prepare", str(run), "--data", f"hr:path={folder},crop=32", "--degradation", "bicubic")
    assert result.exit_code == 0, result.stderr
    rows = RunStore(run).read_table("data", "groups").to_pylist()
    assert len({r["hr"] for r in rows}) == len({r["lr"] for r in rows}) == 40
    for row in rows:  # each group's HR is its own frame's crop
        i = int(row["group_id"].split(".")[1])
        source = np.roll(base, 3 * i, axis=1)
        top, left = row["crop_top"], row["crop_left"]
        crop = source[top : top + 32, left : left + 32]
        assert np.array_equal(read_image(run / row["hr"]), crop), row["group_id"]


def test_run_files_follow_the_umask_for_shared_clusters(dp2o_cli, tmp_path):
    folder, run = _folder(tmp_path), tmp_path / "run"
    previous = os.umask(0o002)  # a group-writable cluster setting
    try:
        assert dp2o_cli("prepare", str(run), "--data", f"hr:path={folder},crop=64").exit_code == 0
        assert dp2o_cli("report", str(run)).exit_code == 0
    finally:
        os.umask(previous)
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in files) and any(p.suffix == ".png" for p in files)
    modes = {oct(p.stat().st_mode & 0o777) for p in files}
    assert modes == {"0o664"}, modes


def test_prepare_on_an_existing_run_keeps_the_settings_other_commands_recorded(dp2o_cli, tmp_path):
    folder, run = _folder(tmp_path), tmp_path / "run"
    assert dp2o_cli("prepare", str(run), "--data", f"hr:path={folder},crop=64").exit_code == 0
    assert "train" not in json.loads((run / "config.json").read_text())  # nothing chose them yet
    record = json.loads((run / "config.json").read_text())
    record["train"] = {"max_steps": 6, "beta": 50000.0}  # as dp2o train would have recorded
    (run / "config.json").write_text(json.dumps(record))
    again = dp2o_cli("prepare", str(run), "--data", f"hr:path={folder},crop=64", "--degradation", "bicubic")
    assert again.exit_code == 0, again.stderr
    after = json.loads((run / "config.json").read_text())
    assert after["train"] == {"max_steps": 6, "beta": 50000.0}
    assert after["components"]["degradation"]["name"] == "bicubic"


def test_fixing_a_bad_input_redoes_only_that_input(dp2o_cli, tmp_path):
    from images import photo
    from PIL import Image

    folder, run = _folder(tmp_path), tmp_path / "run"
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    spec = f"hr:path={folder},crop=64"
    failed = dp2o_cli("prepare", str(run), "--data", spec, "--batch-size", "1")
    assert failed.exit_code == 1 and RunStore(run).status("data").groups_done == 1  # astronaut
    astronaut = RunStore(run).group_path("data", "lr", "astronaut", suffix=".png")
    written = astronaut.stat().st_mtime_ns
    Image.fromarray(photo("hubble_deep_field", 96)).save(folder / "broken.png")  # the fix
    fixed = dp2o_cli("prepare", str(run), "--data", spec)
    assert fixed.exit_code == 0, fixed.stderr
    assert "4 written now, 1 already done" in fixed.stdout
    assert astronaut.stat().st_mtime_ns == written
    # a changed file once the stage is done: that item alone is redone, later stages go stale
    Image.fromarray(photo("coffee", 80)).save(folder / "rocket.png")
    again = dp2o_cli("prepare", str(run), "--data", spec, "--batch-size", "1")
    assert again.exit_code == 0, again.stderr
    store = RunStore(run)
    assert store.status("data").state == "done" and store.status("data").groups_done == 5
    rows = {r["group_id"]: r for r in store.read_table("data", "groups").to_pylist()}
    assert read_image(run / rows["rocket"]["hr"]).shape == (64, 64, 3)
    assert astronaut.stat().st_mtime_ns == written


def test_safetensors_files_follow_the_umask_too(tmp_path):
    import torch
    from safetensors.torch import save_file

    from dp2o_core.atomic import atomic_path, follow_umask

    previous = os.umask(0o002)
    try:
        with atomic_path(tmp_path / "latents.safetensors") as tmp:  # as the sample stage writes latents
            save_file({"latents": torch.zeros(2)}, str(tmp))  # safetensors creates an 0600 file
        (tmp_path / "weights").mkdir()
        save_file({"w": torch.zeros(2)}, str(tmp_path / "weights" / "model.safetensors"))
        follow_umask(tmp_path / "weights")  # what the trainer does to saved checkpoints and weights
    finally:
        os.umask(previous)
    assert oct((tmp_path / "latents.safetensors").stat().st_mode & 0o777) == "0o664"
    assert oct((tmp_path / "weights" / "model.safetensors").stat().st_mode & 0o777) == "0o664"
