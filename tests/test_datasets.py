"""Folder data sets: ids, crops, prompts, pairing, limits and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from images import photo, write_photos
from PIL import Image

from dp2o_core.errors import UsageError
from dp2o_core.imageio import BadImageError
from dp2o_core.specs import resolve_spec


def build(manager, spec):
    return resolve_spec(manager, "dataset", spec).build()


@pytest.fixture
def realesrgan(dp2o_plugin_manager):
    return resolve_spec(dp2o_plugin_manager, "degradation", "realesrgan").build()


def test_hr_folder_ids_are_relative_paths_without_suffix(dp2o_plugin_manager, tmp_path):
    write_photos(tmp_path / "imgs", ("astronaut", "coffee"))
    write_photos(tmp_path / "imgs" / "more", ("rocket",), suffix=".jpg")
    items = build(dp2o_plugin_manager, f"hr:path={tmp_path / 'imgs'}").items()
    assert [i.id for i in items] == ["astronaut", "coffee", "more/rocket"]
    assert items[2].hr == tmp_path / "imgs" / "more" / "rocket.jpg"
    assert items[0].lr is None


def test_hr_folder_load_crops_and_degrades(dp2o_plugin_manager, tmp_path, realesrgan):
    write_photos(tmp_path / "imgs", ("astronaut", "coffee", "chelsea"), size=160)
    dataset = build(dp2o_plugin_manager, f"hr:path={tmp_path / 'imgs'},crop=64,crop_mode=random")
    samples = dataset.load(dataset.items(), seed=5, degradation=realesrgan)
    for sample in samples:
        assert sample.hr.shape == (64, 64, 3) and sample.lr.shape == (16, 16, 3)
        assert sample.lr.dtype == np.uint8
        top, left = sample.crop
        assert 0 <= top <= 96 and 0 <= left <= 96
    again = dataset.load(dataset.items()[::-1], seed=5, degradation=realesrgan)[::-1]
    assert all(np.array_equal(a.lr, b.lr) and a.crop == b.crop for a, b in zip(samples, again, strict=True))
    other = dataset.load(dataset.items(), seed=6, degradation=realesrgan)
    assert any(a.crop != b.crop for a, b in zip(samples, other, strict=True))


def test_center_crop_and_mod_crop(dp2o_plugin_manager, tmp_path, realesrgan):
    write_photos(tmp_path / "imgs", ("coffee",), size=None)  # 400×600
    centre = build(dp2o_plugin_manager, f"hr:path={tmp_path / 'imgs'},crop=128")
    (sample,) = centre.load(centre.items(), seed=0, degradation=realesrgan)
    assert sample.crop == ((400 - 128) // 2, (600 - 128) // 2)
    whole = build(dp2o_plugin_manager, f"hr:path={tmp_path / 'imgs'},scale=3")
    (sample,) = whole.load(whole.items(), seed=0, degradation=realesrgan)
    assert sample.hr.shape == (399, 600, 3) and sample.lr.shape == (133, 200, 3)


def test_hr_folder_reports_bad_images_in_their_slot(dp2o_plugin_manager, tmp_path, realesrgan):
    write_photos(tmp_path / "imgs", ("coffee",), size=64)
    (tmp_path / "imgs" / "zz-broken.png").write_text("no image")
    Image.fromarray(photo("rocket", 32)).save(tmp_path / "imgs" / "small.png")
    dataset = build(dp2o_plugin_manager, f"hr:path={tmp_path / 'imgs'},crop=48")
    loaded = dict(
        zip([i.id for i in dataset.items()], dataset.load(dataset.items(), 0, realesrgan), strict=True)
    )
    assert loaded["coffee"].lr.shape == (12, 12, 3)
    assert isinstance(loaded["small"], BadImageError) and "too small" in loaded["small"].reason
    assert isinstance(loaded["zz-broken"], BadImageError) and "not an image" in loaded["zz-broken"].reason


def test_paired_folder_matches_realsr_style_names(dp2o_plugin_manager, tmp_path):
    (tmp_path / "HR").mkdir()
    (tmp_path / "LR").mkdir()
    for name, source in (("Canon_001", "astronaut"), ("Nikon_002", "coffee")):
        hr = photo(source, 128)
        Image.fromarray(hr).save(tmp_path / "HR" / f"{name}_HR.png")
        Image.fromarray(hr[::4, ::4]).save(tmp_path / "LR" / f"{name}_LR4.png")
    Image.fromarray(photo("rocket", 128)).save(tmp_path / "HR" / "Lonely_003_HR.png")
    dataset = build(dp2o_plugin_manager, f"paired:path={tmp_path},crop=64,crop_mode=random")
    items = dataset.items()
    assert [i.id for i in items] == ["Canon_001", "Nikon_002"]
    samples = dataset.load(items, seed=3)
    for sample in samples:
        top, left = sample.crop
        assert top % 4 == 0 and left % 4 == 0
        assert sample.hr.shape == (64, 64, 3) and sample.lr.shape == (16, 16, 3)
        assert np.array_equal(sample.lr, sample.hr[::4, ::4])  # LR and HR crops are aligned


def test_realsrs_own_layout_pairs_files_side_by_side_and_reduces_an_lr_at_hr_size(
    dp2o_plugin_manager, tmp_path
):
    """RealSR keeps Canon_001_HR.png beside Canon_001_LR4.png, its LR4 stored at the HR's size."""
    hr = photo("astronaut", 128)
    Image.fromarray(hr).save(tmp_path / "Canon_001_HR.png")
    registered = np.asarray(Image.fromarray(hr[::4, ::4]).resize((128, 128), Image.Resampling.BICUBIC))
    Image.fromarray(registered).save(tmp_path / "Canon_001_LR4.png")
    Image.fromarray(photo("coffee", 128)).save(tmp_path / "Nikon_002_HR.png")
    Image.fromarray(photo("coffee", 128)[::4, ::4]).save(tmp_path / "Nikon_002_LR4.png")
    dataset = build(dp2o_plugin_manager, f"paired:path={tmp_path}")
    items = dataset.items()
    assert [(i.id, i.hr.name, i.lr.name) for i in items] == [
        ("Canon_001", "Canon_001_HR.png", "Canon_001_LR4.png"),
        ("Nikon_002", "Nikon_002_HR.png", "Nikon_002_LR4.png"),
    ]
    for sample in dataset.load(items, seed=0):
        assert sample.lr.shape == (32, 32, 3) and sample.hr.shape == (128, 128, 3)
    # scale=1: the registered LR is kept at the HR's size, as the authors' --upscale 1 takes it
    kept = build(dp2o_plugin_manager, f"paired:path={tmp_path},scale=1").load(items[:1], seed=0)[0]
    assert np.array_equal(kept.lr, registered) and kept.hr.shape == (128, 128, 3)
    # … and a pair of two sizes is named before any work (from the headers), not cropped into a
    # misaligned pair; load() refuses it too
    registered = build(dp2o_plugin_manager, f"paired:path={tmp_path},scale=1")
    with pytest.raises(
        UsageError, match=r"1 LR image\(s\) do not have their HR's size \(.*Nikon_002_LR4.png is 32×32"
    ):
        registered.items()
    wrong = registered.load(items[1:], seed=0)[0]
    assert isinstance(wrong, BadImageError) and "Nikon_002_LR4.png" in str(wrong)
    assert "is 32×32 but its HR" in str(wrong) and "scale=1" in str(wrong)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=r"holds no \*_HR / \*_LR<scale> files side by side"):
        build(dp2o_plugin_manager, f"paired:path={empty}").items()


def test_drealsrs_layout_is_found_by_itself(dp2o_plugin_manager, tmp_path):
    """DRealSR unpacks as x4/Test_x4/test_HR/<name>_x4.png (HR) beside test_LR/<name>_x1.png (LR)."""
    test = tmp_path / "DRealSR" / "x4" / "Test_x4"
    (test / "test_HR").mkdir(parents=True)
    (test / "test_LR").mkdir()
    for name, source in (("Canon_10", "astronaut"), ("sony_7", "coffee")):
        hr = photo(source, 128)
        Image.fromarray(hr).save(test / "test_HR" / f"{name}_x4.png")
        Image.fromarray(hr[::4, ::4]).save(test / "test_LR" / f"{name}_x1.png")
    dataset = build(dp2o_plugin_manager, f"paired:path={test},crop=64,crop_mode=random")
    items = dataset.items()
    assert [(i.id, i.hr.name, i.lr.name) for i in items] == [
        ("Canon_10", "Canon_10_x4.png", "Canon_10_x1.png"),
        ("sony_7", "sony_7_x4.png", "sony_7_x1.png"),
    ]
    for sample in dataset.load(items, seed=1):
        assert np.array_equal(sample.lr, sample.hr[::4, ::4])
    with pytest.raises(UsageError, match=rf"did you mean path={test}\?"):
        build(dp2o_plugin_manager, f"paired:path={tmp_path / 'DRealSR' / 'x4'}").items()


def test_paired_folder_trims_hr_and_rejects_too_small_hr(dp2o_plugin_manager, tmp_path):
    (tmp_path / "HR").mkdir()
    (tmp_path / "LR").mkdir()
    Image.fromarray(photo("coffee", 130)).save(tmp_path / "HR" / "a.png")
    Image.fromarray(photo("coffee", 32)).save(tmp_path / "LR" / "a.png")
    Image.fromarray(photo("rocket", 100)).save(tmp_path / "HR" / "b.png")
    Image.fromarray(photo("rocket", 32)).save(tmp_path / "LR" / "b.png")
    dataset = build(dp2o_plugin_manager, f"paired:path={tmp_path}")
    a, b = dataset.load(dataset.items(), seed=0)
    assert a.hr.shape == (128, 128, 3)
    assert isinstance(b, BadImageError) and "needs 128×128" in b.reason


def test_lr_folder_has_no_hr(dp2o_plugin_manager, tmp_path):
    write_photos(tmp_path / "lr", ("chelsea",), size=40)
    dataset = build(dp2o_plugin_manager, f"lr:path={tmp_path / 'lr'},crop=64")
    (sample,) = dataset.load(dataset.items(), seed=0)
    assert sample.hr is None and sample.lr.shape == (16, 16, 3)


def test_max_images_and_include_patterns(dp2o_plugin_manager, tmp_path):
    write_photos(tmp_path / "imgs", ("astronaut", "coffee", "chelsea"))
    write_photos(tmp_path / "imgs", ("rocket",), suffix=".jpg")
    assert len(build(dp2o_plugin_manager, f"hr:path={tmp_path / 'imgs'},max_images=2").items()) == 2
    only_jpg = build(dp2o_plugin_manager, f"hr:path={tmp_path / 'imgs'},include=[*.jpg]").items()
    assert [i.id for i in only_jpg] == ["rocket"]


@pytest.mark.parametrize("kind", ["csv", "jsonl", "txt", "sidecar"])
def test_prompts_from_sidecar_files(dp2o_plugin_manager, tmp_path, kind):
    write_photos(tmp_path / "imgs", ("astronaut", "coffee"))
    prompts = {"astronaut": "a woman in a space suit", "coffee": "a cup of coffee, top view"}
    option = ""
    if kind == "csv":
        lines = ["file,prompt"] + [f'{k}.png,"{v}"' for k, v in prompts.items()]
        (tmp_path / "p.csv").write_text("\n".join(lines))
        option = f",prompts={tmp_path / 'p.csv'}"
    elif kind == "jsonl":
        (tmp_path / "p.jsonl").write_text(
            "\n".join(json.dumps({"id": k, "caption": v}) for k, v in prompts.items())
        )
        option = f",prompts={tmp_path / 'p.jsonl'}"
    elif kind == "txt":
        (tmp_path / "p.txt").write_text("\n".join(f"{k}.png\t{v}" for k, v in prompts.items()))
        option = f",prompts={tmp_path / 'p.txt'}"
    else:
        for k, v in prompts.items():
            (tmp_path / "imgs" / f"{k}.txt").write_text(v + "\n")
    items = build(dp2o_plugin_manager, f"hr:path={tmp_path / 'imgs'}{option}").items()
    assert {i.id: i.prompt for i in items} == prompts


def test_bad_prompts_file_is_named(dp2o_plugin_manager, tmp_path):
    write_photos(tmp_path / "imgs", ("coffee",))
    (tmp_path / "p.csv").write_text("name,words\ncoffee,hot\n")
    with pytest.raises(UsageError, match=r"p\.csv, entry 1: needs a file/id/image/path"):
        build(dp2o_plugin_manager, f"hr:path={tmp_path / 'imgs'},prompts={tmp_path / 'p.csv'}").items()


def test_folder_errors_name_the_option(dp2o_plugin_manager, tmp_path):
    with pytest.raises(UsageError, match="does not exist or is not a folder"):
        build(dp2o_plugin_manager, f"hr:path={tmp_path / 'nope'}").items()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images in"):
        build(dp2o_plugin_manager, f"hr:path={tmp_path / 'empty'}").items()
    with pytest.raises(UsageError, match="crop 102 is not a multiple of scale 4"):
        build(dp2o_plugin_manager, f"hr:path={tmp_path},crop=102")
    with pytest.raises(UsageError, match="option path: Field required"):
        build(dp2o_plugin_manager, "hr")


def test_two_files_with_one_id_are_an_error(dp2o_plugin_manager, tmp_path):
    write_photos(tmp_path / "imgs", ("coffee",))
    write_photos(tmp_path / "imgs", ("coffee",), suffix=".jpg")
    with pytest.raises(UsageError, match="two files give the data item id 'coffee'"):
        build(dp2o_plugin_manager, f"hr:path={tmp_path / 'imgs'}").items()


def test_the_photos_data_set_splits_scikit_images_photographs_into_train_and_held_out(dp2o_plugin_manager):
    from dp2o_core.specs import resolve_spec

    def ids(spec):
        return [item.id for item in resolve_spec(dp2o_plugin_manager, "dataset", spec).build().items()]

    train, held_out, unseen = ids("photos"), ids("photos:split=held-out"), ids("photos:split=unseen")
    assert held_out == ["astronaut", "chelsea"]
    assert unseen == ["astronaut", "chelsea", "coins", "grace_hopper", "moon"]
    assert len(train) == 10 and not set(train) & set(unseen)
    assert sorted(ids("photos:split=all")) == sorted(train + unseen)
    assert ids("photos:split=unseen,include=[g*]") == ["grace_hopper"]
    portrait = build(dp2o_plugin_manager, "photos:split=unseen,include=[grace*],crop=96")
    degradation = resolve_spec(dp2o_plugin_manager, "degradation", "bicubic").build()
    (sample,) = portrait.load(portrait.items(), seed=0, degradation=degradation)
    assert sample.hr.shape == (96, 96, 3) and sample.lr.shape == (24, 24, 3) and sample.hr.std() > 10
    assert ids("photos:max_images=3") == train[:3]
    assert ids("photos:include=[c*]") == ["camera", "coffee"]
