"""``dp2o sample`` and ``dp2o upscale`` with a tiny SD model saved in the hub layout."""

from __future__ import annotations

import pytest
import torch
from images import write_photos
from safetensors.torch import load_file

from dp2o_core.imageio import read_image
from dp2o_core.stages.sample import candidate_seeds, load_prompt_files
from dp2o_core.store import RunStore


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "imgs"
    write_photos(folder, ("astronaut", "coffee"), size=64)
    return folder


def test_sample_writes_candidates_seeds_latents_and_prompts_then_resumes(dp2o_cli, tiny_sd, photos, tmp_path):
    run = tmp_path / "run"
    spec = f"sd2:model={tiny_sd},steps=3,device=cpu,geometry=exact,controlnet=new"
    args = (
        "sample",
        str(run),
        "--backbone",
        spec,
        "--data",
        f"hr:path={photos},crop=64",
        "-m",
        "3",
        "--seed",
        "5",
    )
    result = dp2o_cli(*args)
    assert result.exit_code == 0, result.stderr
    assert "sample: done — 2/2 groups (2 sampled now), 3 candidates each" in result.stdout
    store = RunStore(run)
    rows = store.read_table("sample", "candidates").to_pylist()
    assert len(rows) == 6
    for row in rows:
        image = read_image(run / row["image"])
        assert image.shape == (64, 64, 3)
        assert row["seed"] == candidate_seeds(5, row["group_id"], 3, False)[row["candidate"]]
        latents = load_file(str(run / row["latent_shard"]))["latents"]
        assert latents.shape == (3, 4, 8, 8) and torch.isfinite(latents).all()
    assert len({r["seed"] for r in rows}) == 6
    assert list((run / "sample" / "prompts").glob("*.safetensors"))
    again = dp2o_cli(*args)
    assert "(0 sampled now)" in again.stdout


def test_shared_noise_bank_gives_every_group_the_same_seeds(dp2o_cli, tiny_sd, photos, tmp_path):
    run = tmp_path / "run"
    result = dp2o_cli(
        "sample",
        str(run),
        "--backbone",
        f"sd2:model={tiny_sd},steps=2,device=cpu,geometry=exact,controlnet=new",
        "--data",
        f"hr:path={photos},crop=64",
        "-m",
        "2",
        "--seed",
        "10",
        "--shared-noise",
    )
    assert result.exit_code == 0, result.stderr
    seeds = {
        (r["group_id"], r["candidate"]): r["seed"]
        for r in RunStore(run).read_table("sample", "candidates").to_pylist()
    }
    assert seeds == {("astronaut", 0): 10, ("astronaut", 1): 11, ("coffee", 0): 10, ("coffee", 1): 11}


def test_upscale_a_file_and_a_folder(dp2o_cli, tiny_sd, photos, tmp_path):
    spec = f"sd2:model={tiny_sd},steps=2,device=cpu,geometry=exact,controlnet=new"
    one = dp2o_cli("upscale", str(photos / "coffee.png"), str(tmp_path / "out.png"), "--backbone", spec)
    assert one.exit_code == 0, one.stderr
    assert read_image(tmp_path / "out.png").shape == (256, 256, 3)
    many = dp2o_cli(
        "upscale", str(photos), str(tmp_path / "up"), "--backbone", spec, "-m", "2", "--seed", "3"
    )
    assert many.exit_code == 0, many.stderr
    assert sorted(p.name for p in (tmp_path / "up").iterdir()) == [
        "astronaut_0.png",
        "astronaut_1.png",
        "coffee_0.png",
        "coffee_1.png",
    ]


def test_missing_data_and_input_are_named(dp2o_cli, tmp_path):
    result = dp2o_cli("sample", str(tmp_path / "run"))  # the default backbone, tiny-sr, but no data
    assert result.exit_code == 1 and "stage 'data'" in result.stderr and "missing" in result.stderr
    result = dp2o_cli("upscale", str(tmp_path / "nothing.png"), str(tmp_path / "o.png"), "--backbone", "sd2")
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_stored_prompt_embeddings_spare_the_text_encoder(dp2o_cli, tiny_sd, photos, tmp_path, monkeypatch):
    from dp2o_plugins.backbones.sd2_controlnet import Sd2ControlNetBackbone

    run = tmp_path / "run"
    spec = f"sd2:model={tiny_sd},steps=2,device=cpu,geometry=exact,controlnet=new"
    data = f"hr:path={photos},crop=64"
    assert dp2o_cli("sample", str(run), "--backbone", spec, "--data", data, "-m", "2").exit_code == 0
    stored = load_prompt_files(RunStore(run))
    assert set(stored) == {"", "dotted, noise, blur, lowres, smooth"}

    def no_text_encoder(self):
        raise AssertionError("the text encoder was loaded although every prompt is stored")

    monkeypatch.setattr(Sd2ControlNetBackbone, "_text_encoder", no_text_encoder)
    result = dp2o_cli(
        "sample", str(run), "--backbone", spec, "--data", data, "-m", "3", "--redo"
    )  # M changed: resample (the finished candidates are discarded only with --redo)
    assert result.exit_code == 0, result.stderr
    assert "(2 sampled now), 3 candidates each" in result.stdout


def test_upscale_never_overwrites_an_input_and_keeps_outputs_apart(dp2o_cli, tiny_sd, photos, tmp_path):
    spec = f"sd2:model={tiny_sd},steps=2,device=cpu,geometry=exact,controlnet=new"
    coffee = photos / "coffee.png"
    before = coffee.read_bytes()
    same = dp2o_cli("upscale", str(coffee), str(coffee), "--backbone", spec)
    assert same.exit_code == 2 and "overwrite its input" in same.stderr and str(coffee) in same.stderr
    into_itself = dp2o_cli("upscale", str(photos), str(photos), "--backbone", spec)
    assert into_itself.exit_code == 2 and "overwrite its input" in into_itself.stderr
    assert coffee.read_bytes() == before
    # a.jpg and a.png in one folder get two outputs; a bad file is skipped, listed and not counted
    from PIL import Image

    Image.open(coffee).convert("RGB").save(photos / "coffee.jpg")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    stopped = dp2o_cli("upscale", str(photos), str(tmp_path / "up"), "--backbone", spec)
    assert (
        stopped.exit_code == 1 and "broken.png" in stopped.stderr and "--on-bad-image skip" in stopped.stderr
    )
    result = dp2o_cli(
        "upscale", str(photos), str(tmp_path / "up"), "--backbone", spec, "--on-bad-image", "skip"
    )
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "up").iterdir()) == [
        "astronaut.png",
        "coffee_jpg.png",
        "coffee_png.png",
    ]
    assert "3 inputs × 1" in result.stdout and "1 skipped" in result.stdout and "broken.png" in result.stdout


def test_upscale_warns_before_a_large_input(dp2o_cli, tiny_sd, photos, tmp_path, monkeypatch):
    from dp2o_cli import upscale_cmd

    monkeypatch.setattr(upscale_cmd, "LARGE_INPUT_PIXELS", 64 * 64 - 1)
    spec = f"sd2:model={tiny_sd},steps=1,device=cpu,geometry=exact,controlnet=new"
    result = dp2o_cli("upscale", str(photos / "coffee.png"), str(tmp_path / "o.png"), "--backbone", spec)
    assert result.exit_code == 0 and "coffee.png is 64×64 px" in result.stderr, result.stderr


def test_small_groups_are_sampled_together_with_the_candidates_they_get_alone(
    dp2o_cli, tiny_sd, photos, tmp_path, monkeypatch
):
    """M = 2 with chunk_size 8: both groups go to the backbone in one call (one batch of 4), and
    every candidate image and latent is what one group per call gives (chunk_size 2)."""
    from dp2o_plugins.backbones.controlnet_base import ControlNetBackbone

    calls: list[int] = []
    sample = ControlNetBackbone.sample

    def counting(self, lr, seeds, prompts=None):
        calls.append(lr.shape[0])
        return sample(self, lr, seeds, prompts)

    monkeypatch.setattr(ControlNetBackbone, "sample", counting)
    runs = {}
    for chunk in (8, 2):
        run = tmp_path / f"run-{chunk}"
        result = dp2o_cli(
            "sample", str(run),
            "--backbone", f"sd2:model={tiny_sd},steps=2,device=cpu,geometry=exact,controlnet=new,chunk_size={chunk}",  # noqa: E501
            "--data", f"hr:path={photos},crop=64", "-m", "2",
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        runs[chunk] = run
    assert calls == [2, 1, 1]  # chunk 8: one call for both groups; chunk 2: one call per group
    together, alone = (RunStore(runs[c]).read_table("sample", "candidates").to_pylist() for c in (8, 2))
    assert [(r["group_id"], r["candidate"], r["seed"]) for r in together] == [
        (r["group_id"], r["candidate"], r["seed"]) for r in alone
    ]
    for a, b in zip(together, alone, strict=True):
        difference = read_image(runs[8] / a["image"]).astype(int) - read_image(runs[2] / b["image"])
        assert abs(difference).max() <= 1  # float rounding of another batch may flip a level
        latents_a = load_file(str(runs[8] / a["latent_shard"]))["latents"]
        latents_b = load_file(str(runs[2] / b["latent_shard"]))["latents"]
        assert torch.allclose(latents_a, latents_b, atol=1e-4)


def test_groups_of_different_lr_sizes_never_share_a_call():
    from dp2o_core.stages.sample import same_size_batches

    sizes = {"a": 16, "b": 16, "c": 24, "d": 16, "e": 16, "f": 16}
    calls = list(same_size_batches(list(sizes), 2, lambda g: torch.zeros(1, 3, sizes[g], sizes[g])))
    assert [[group_id for group_id, _ in call] for call in calls] == [["a", "b"], ["c"], ["d", "e"], ["f"]]
