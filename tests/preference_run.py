"""A run whose preferences are known: winners are smooth candidates, losers noisy ones.

For each group, candidates 0 and 1 are the HR image blurred, candidates 2 and 3 the HR image
with strong Gaussian noise; their latents are the backbone's own encodings, stored the way
the sample stage stores them. The pairs table pairs every smooth candidate with every noisy
one — except for the held-out groups, which get no pairs, so a trained model can be checked
on preferences it never saw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from images import write_photos
from PIL import Image, ImageFilter
from safetensors.torch import save_file

from dp2o_core.imageio import read_image, write_png
from dp2o_core.store import ProcessInfo, RunStore

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
SMOOTH, NOISY = (0, 1), (2, 3)


def candidate_image(hr: np.ndarray, m: int) -> np.ndarray:
    """Candidate m of a group: blurred (m < 2) or noisy (m ≥ 2), slightly different per m."""
    if m in SMOOTH:
        return np.asarray(Image.fromarray(hr).filter(ImageFilter.GaussianBlur(1.5 + m)))
    noise = np.random.default_rng(m).normal(0, 40, hr.shape)
    return np.clip(hr.astype(np.float64) + noise, 0, 255).round().astype(np.uint8)


def make_preference_run(root: Path, backbone, held_out: int = 1, size: int = 64) -> RunStore:
    """Data, sample, score and pairs stages of a run in ``root / 'run'``; the last
    ``held_out`` groups have candidates but no pairs."""
    from dp2o_cli.app import run as cli

    write_photos(root / "imgs", PHOTOS, size=size)
    store = RunStore(root / "run")
    assert (
        cli(
            [
                "prepare",
                str(store.root),
                "--data",
                f"hr:path={root / 'imgs'},crop={size}",
                "--degradation",
                "bicubic",
            ]
        )
        == 0
    )
    groups = store.read_table("data", "groups").to_pylist()
    ids = sorted(g["group_id"] for g in groups)
    by_id = {g["group_id"]: g for g in groups}
    single = ProcessInfo()
    with store.open_stage("sample", config={"preference": "smooth"}, group_ids=ids, process=single) as writer:
        for group_id in writer.todo:
            hr = read_image(store.root / by_id[group_id]["hr"])
            images = [candidate_image(hr, m) for m in range(4)]
            tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
            with torch.no_grad():
                latents = backbone.encode(tensor).float().cpu()
            shard = store.group_path("sample", "latents", group_id, suffix=".safetensors")
            shard.parent.mkdir(parents=True, exist_ok=True)
            save_file({"latents": latents.contiguous()}, str(shard))
            rows = []
            for m, image in enumerate(images):
                path = store.group_path("sample", "images", group_id, f"{m:03d}.png")
                write_png(path, image)
                rows.append(
                    {
                        "candidate": m,
                        "seed": m,
                        "image": store.relative(path),
                        "latent_shard": store.relative(shard),
                        "latent_index": m,
                    }
                )
            writer.add_group(group_id, candidates=rows)
    with store.open_stage("score", config={"preference": "smooth"}, group_ids=ids, process=single) as writer:
        for group_id in writer.todo:
            writer.add_group(
                group_id, scores=[{"candidate": m, "smooth": float(m in SMOOTH)} for m in range(4)]
            )
    trained = ids[: len(ids) - held_out]
    with store.open_stage("pairs", config={"preference": "smooth"}, group_ids=ids, process=single) as writer:
        for group_id in writer.todo:
            pairs = [
                {
                    "winner": w,
                    "loser": loser,
                    "winner_reward": 1.0,
                    "loser_reward": 0.0,
                    "intra_weight": 1.0,
                    "inter_weight": 1.0,
                    "weight": 1.0,
                }
                for w in SMOOTH
                for loser in NOISY
            ]
            writer.add_group(group_id, pairs=pairs if group_id in trained else [])
    return store


def held_out_groups(store: RunStore, held_out: int = 1) -> list[str]:
    """The groups that have candidates but no pairs."""
    ids = sorted(store.read_table("data", "groups").column("group_id").to_pylist())
    return ids[len(ids) - held_out :]
