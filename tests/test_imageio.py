"""Image reading: every format and mode becomes 8-bit RGB; bad files get named errors."""

from __future__ import annotations

import numpy as np
import pytest
from images import photo
from PIL import Image

from dp2o_core.imageio import BadImageError, list_images, read_image, read_image_tensor, write_png


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif", ".bmp"])
def test_every_format_reads_as_rgb8(tmp_path, suffix):
    source = photo("coffee", 64)
    path = tmp_path / f"coffee{suffix}"
    Image.fromarray(source).save(path, **({"quality": 95} if suffix in (".jpg", ".webp") else {}))
    image = read_image(path)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    lossless = suffix in (".png", ".tif", ".bmp")
    assert np.abs(image.astype(int) - source.astype(int)).mean() < (0.01 if lossless else 6)


def test_greyscale_is_copied_to_three_channels(tmp_path):
    grey = np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert (image == grey[:, :, None]).all()


def test_rgba_is_composited_onto_white(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red hidden under full transparency …
    rgba[:4, :, 3] = 255  # … except the top half, which is opaque
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert (image[:4] == [200, 0, 0]).all()
    assert (image[4:] == 255).all()


def test_palette_with_and_without_transparency(tmp_path):
    palette = Image.fromarray(photo("chelsea", 32)).convert("P", palette=Image.ADAPTIVE, colors=16)
    palette.save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (32, 32, 3)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "pt.png", transparency=0)
    image = read_image(tmp_path / "pt.png")
    transparent = np.asarray(palette) == 0
    assert (image[transparent] == 255).all()


def test_16bit_greyscale_is_scaled_to_8bit(tmp_path):
    values = np.array([[0, 257 * 128, 65535]], dtype=np.uint16).repeat(4, axis=0)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    image = read_image(tmp_path / "deep.png")
    assert image[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path):
    source = np.zeros((20, 40, 3), dtype=np.uint8)
    source[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    Image.fromarray(source).save(tmp_path / "rot.jpg", exif=exif, quality=100)
    image = read_image(tmp_path / "rot.jpg")
    assert image.shape == (40, 20, 3)
    assert image[:15].mean() > 200 and image[25:].mean() < 50  # the white half is now on top


def _bad_corpus(folder):
    """Every kind of bad file, written fresh: {name: expected reason fragment}."""
    folder.mkdir(exist_ok=True)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("this is not an image")
    Image.fromarray(photo("rocket", 64)).save(folder / "whole.jpg", quality=90)
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "whole.jpg").unlink()
    Image.fromarray(photo("rocket", 64)).save(folder / "cut.png")
    data = (folder / "cut.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(folder / "tiny.png")
    return {
        "empty.png": "the file is empty",
        "notes.png": "not an image file",
        "truncated.jpg": "truncated",
        "cut.png": "truncated",
        "tiny.png": "too small: 4×4 pixels, at least 16×16 needed",
        "missing.png": "file not found",
    }


def test_bad_files_get_errors_naming_file_and_reason(tmp_path):
    for name, reason in _bad_corpus(tmp_path / "bad").items():
        with pytest.raises(BadImageError) as error:
            read_image(tmp_path / "bad" / name, min_size=16)
        assert error.value.path == tmp_path / "bad" / name
        assert reason in error.value.reason, (name, error.value.reason)
        assert str(tmp_path / "bad" / name) in str(error.value)
        assert "--on-bad-image skip" in str(error.value)


def test_unreadable_file_is_named(tmp_path, monkeypatch):
    # Tests run as root, who may read anything: make the open fail as it would for a user.
    path = tmp_path / "locked.png"
    Image.fromarray(photo("rocket", 32)).save(path)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", denied)
    with pytest.raises(BadImageError, match="permission denied") as error:
        read_image(path)
    assert error.value.path == path


def test_write_png_round_trips_and_leaves_no_temporary_files(tmp_path):
    image = photo("astronaut", 48)
    write_png(tmp_path / "sub" / "a.png", image)
    assert (read_image(tmp_path / "sub" / "a.png") == image).all()
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.png"]


def test_list_images_sorts_filters_and_skips_hidden(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt", ".hidden.png", "sub/c.webp", ".cache/d.png"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == [
        "a.JPG",
        "b.png",
        "sub/c.webp",
    ]
    assert [p.name for p in list_images(tmp_path, ("*.png",))] == ["b.png"]


def test_read_image_tensor_is_one_chw_float_image_in_0_1(tmp_path):
    import torch

    array = np.zeros((5, 7, 3), dtype=np.uint8)
    array[0, 0] = (255, 128, 0)
    write_png(tmp_path / "a.png", array)
    tensor = read_image_tensor(tmp_path / "a.png")
    assert tensor.shape == (1, 3, 5, 7) and tensor.dtype == torch.float32
    assert (
        tensor[0, :, 0, 0].tolist() == pytest.approx([1.0, 128 / 255, 0.0])
        and tensor[0, :, 1:, 1:].max() == 0
    )
