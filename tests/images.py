"""Real photographs from scikit-image, written as test data sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def photo(name: str, size: int | None = None) -> np.ndarray:
    """A scikit-image photograph as H×W×3 uint8, optionally resized to size×size."""
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if size is not None:
        image = np.asarray(Image.fromarray(image[:, :, :3]).resize((size, size), Image.BICUBIC))
    return np.ascontiguousarray(image[:, :, :3])


def write_photos(folder: Path, names=PHOTOS, size: int | None = 128, suffix: str = ".png") -> list[Path]:
    """Write photographs into ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}{suffix}"
        Image.fromarray(photo(name, size)).save(path)
        paths.append(path)
    return paths
