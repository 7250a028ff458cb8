"""A ``sample`` stage written the way the sampler writes it, from HR images and known distortions.

Candidate m of a group is its HR reference blurred by ``BLURS[m]`` pixels and given
Gaussian noise ``NOISE[m]``, so candidate 0 is the best and the last the worst for any
sensible metric. Tests of scoring and pairing use it until the real sampler exists.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from dp2o_core.imageio import read_image, write_png
from dp2o_core.store import ProcessInfo, RunStore

BLURS = (0.0, 0.6, 1.2, 1.8, 2.4, 3.0)
NOISE = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0)


def write_candidates(store: RunStore, count: int = len(BLURS)) -> None:
    """Fill the run's ``sample`` stage with ``count`` distorted copies of each HR image."""
    groups = store.read_table("data", "groups").to_pylist()
    with store.open_stage(
        "sample", config={"test": count}, group_ids=[g["group_id"] for g in groups], process=ProcessInfo()
    ) as writer:
        by_id = {g["group_id"]: g for g in groups}
        for group_id in writer.todo:
            hr = read_image(store.root / by_id[group_id]["hr"])
            rows = []
            for m in range(count):
                image = (
                    Image.fromarray(hr).filter(ImageFilter.GaussianBlur(BLURS[m]))
                    if BLURS[m]
                    else Image.fromarray(hr)
                )
                noise = np.random.default_rng(m).normal(0, NOISE[m], hr.shape)
                array = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).round().astype(np.uint8)
                path = store.group_path("sample", "images", group_id, f"{m:03d}.png")
                write_png(path, array)
                rows.append({"candidate": m, "seed": m, "image": store.relative(path)})
            writer.add_group(group_id, candidates=rows)
