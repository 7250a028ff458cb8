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


def test_an_image_too_large_to_upscale_is_refused_from_its_header(dp2o_cli, tmp_path):
    """A small file that declares 9000×9000 pixels is named before it is decoded (×4 that is
    terabytes of activations); in a folder with --on-bad-image skip the others are upscaled."""
    import resource

    from PIL import Image

    folder = tmp_path / "inputs"
    folder.mkdir()
    Image.new("1", (9000, 9000)).save(folder / "bomb.png")
    assert (folder / "bomb.png").stat().st_size < 200_000
    Image.new("RGB", (12, 10), (90, 120, 30)).save(folder / "small.png")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    one = dp2o_cli("upscale", str(folder / "bomb.png"), str(tmp_path / "out.png"), "--backbone", "tiny-sr")
    assert one.exit_code == 1
    message = one.stderr.replace("\n", " ")
    assert (
        f"bad image {folder / 'bomb.png'}: 9000×9000 px" in message
        and "crop it into smaller pieces" in message
    )
    assert "needs about" in message and "free on cpu" in message
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KiB: nothing decoded
    both = dp2o_cli("upscale", str(folder), str(tmp_path / "out"), "--backbone", "tiny-sr:steps=2",
                    "--on-bad-image", "skip")  # fmt: skip
    assert both.exit_code == 0, both.stderr
    assert (tmp_path / "out" / "small.png").exists() and not (tmp_path / "out" / "bomb.png").exists()
    assert "skipped" in both.stdout and "bomb.png" in both.stdout


def test_the_sampling_memory_estimate_grows_with_the_output_and_the_chunk():
    from dp2o_core.registry import PluginManager
    from dp2o_core.specs import resolve_spec

    # untiled (tile=0): the whole output's activations (test_tiling.py covers tiled estimates)
    model = resolve_spec(PluginManager(), "backbone", "tiny-sr:chunk_size=4,tile=0").build()
    one = model.sampling_memory(100, 100, 1)
    assert model.sampling_memory(200, 100, 1) == 2 * one
    # candidates beyond one chunk add only their finished images, not activations
    assert model.sampling_memory(100, 100, 4) > 3 * one
    assert model.sampling_memory(100, 100, 8) - model.sampling_memory(100, 100, 4) < one
    assert one >= 100 * 100 * 16 * 700  # at least the measured 700 bytes per output pixel


def test_the_skip_hint_is_given_only_where_skipping_can_help(dp2o_cli, tmp_path):
    from PIL import Image

    folder = tmp_path / "inputs"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not an image")
    Image.new("RGB", (12, 10)).save(folder / "fine.png")
    one = dp2o_cli("upscale", str(folder / "broken.png"), str(tmp_path / "o.png"), "--backbone", "tiny-sr")
    assert one.exit_code == 1 and "bad image" in one.stderr and "--on-bad-image" not in one.stderr
    several = dp2o_cli("upscale", str(folder), str(tmp_path / "out"), "--backbone", "tiny-sr")
    assert several.exit_code == 1 and "--on-bad-image skip" in " ".join(several.stderr.split())
    evaluated = dp2o_cli("eval", "--data", f"lr:path={folder}", "--backbone", "tiny-sr:steps=2", "-m", "2")
    assert evaluated.exit_code == 1 and "bad image" in evaluated.stderr
    assert "--on-bad-image" not in evaluated.stderr  # dp2o eval has no such option
