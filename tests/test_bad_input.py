"""Bad input and a hostile environment get one line naming the file and the fix, never a traceback."""

from __future__ import annotations

import errno
import os

import pytest
from images import write_photos

from dp2o_core.store import RunStore


def _error_line(result):
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr


def test_a_file_name_that_is_not_utf8_is_named_with_the_fix(dp2o_cli, tmp_path):
    folder = tmp_path / "imgs"
    write_photos(folder, ("coffee",), size=64)
    os.rename(folder / "coffee.png", os.fsencode(folder) + b"/caf\xe9.png")
    result = dp2o_cli("prepare", str(tmp_path / "run"), "--data", f"hr:path={folder},crop=32")
    assert result.exit_code == 2
    assert "caf\\xe9.png" in _error_line(result) and "not valid UTF-8" in result.stderr


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("prompts.csv", b"file,prompt\ncoffee.png,caf\xe9\n", "is not UTF-8 text"),
        ("prompts.jsonl", b'["coffee.png", "a cup"]\n', "expected an object"),
    ],
)
def test_a_bad_prompts_file_is_named(dp2o_cli, tmp_path, name, content, expected):
    folder = tmp_path / "imgs"
    write_photos(folder, ("coffee",), size=64)
    (tmp_path / name).write_bytes(content)
    spec = f"hr:path={folder},crop=32,prompts={tmp_path / name}"
    result = dp2o_cli("prepare", str(tmp_path / "run"), "--data", spec)
    assert result.exit_code == 2 and name in _error_line(result) and expected in result.stderr


def test_a_sidecar_and_a_config_that_are_not_utf8_are_named(dp2o_cli, tmp_path):
    folder = tmp_path / "imgs"
    write_photos(folder, ("coffee",), size=64)
    (folder / "coffee.txt").write_bytes(b"caf\xe9 au lait")
    result = dp2o_cli("prepare", str(tmp_path / "run"), "--data", f"hr:path={folder},crop=32")
    assert result.exit_code == 2 and "coffee.txt is not UTF-8" in _error_line(result)
    (tmp_path / "c.toml").write_bytes(b"seed = 1 # caf\xe9\n")
    result = dp2o_cli("config", "--config", str(tmp_path / "c.toml"))
    assert result.exit_code == 2 and "c.toml is not UTF-8" in _error_line(result)


def test_a_run_path_that_is_a_file_and_an_export_onto_a_file(dp2o_cli, tmp_path):
    (tmp_path / "afile").write_text("x")
    for args in (("train", "--run", str(tmp_path / "afile")), ("status", str(tmp_path / "afile"))):
        result = dp2o_cli(*args)
        assert result.exit_code == 2 and "afile" in _error_line(result), result.stderr
    result = dp2o_cli("export", str(tmp_path / "run"), str(tmp_path / "afile"))
    assert result.exit_code == 2 and "afile is a file" in _error_line(result)
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize(
    ("code", "expected"), [(errno.EROFS, "cannot write"), (errno.ENOSPC, "disk is full")]
)
def test_a_read_only_or_full_disk_is_one_line_naming_the_file(
    dp2o_cli, tmp_path, monkeypatch, code, expected
):
    folder = tmp_path / "imgs"
    write_photos(folder, ("coffee", "astronaut"), size=64)
    run = tmp_path / "run"
    assert dp2o_cli("prepare", str(run), "--data", f"hr:path={folder},crop=32").exit_code == 0
    import tempfile

    def refuse(*args, dir=None, **kwargs):
        raise OSError(code, os.strerror(code), str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    result = dp2o_cli("report", str(run))
    assert result.exit_code == 1 and expected in _error_line(result) and str(run) in result.stderr
    assert RunStore(run).status("data").state == "done"  # nothing lost
