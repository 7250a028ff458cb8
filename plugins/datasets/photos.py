"""``photos``: the photographs that ship with scikit-image, as an HR data set.

They are on every machine dp2o installs on (scikit-image comes with pyiqa), so a run needs
no data download. Two are kept out of training (``split=held-out``) for evaluation on
images the model never saw; ``split=unseen`` adds three more that no training or
pretraining reads — coins and moon from scikit-image, and the portrait of Grace Hopper
that ships with matplotlib (a dp2o dependency) — for a wider held-out measurement.
"""

from __future__ import annotations

import fnmatch
import importlib.util
from pathlib import Path
from typing import Literal

from dp2o_plugins.datasets.folders import FolderOptions, HrFolderDataset
from pydantic import Field

from dp2o_core.errors import UsageError
from dp2o_core.imageio import list_images

#: Photographs used for training (colour, and greyscale textures read as RGB).
TRAIN_PHOTOS = (
    "brick",
    "camera",
    "coffee",
    "grass",
    "gravel",
    "hubble_deep_field",
    "ihc",
    "motorcycle_left",
    "retina",
    "rocket",
)
#: Photographs kept out of training; the embedded default evaluates on these.
HELD_OUT_PHOTOS = ("astronaut", "chelsea")
#: More photographs nothing trains on, for a held-out measurement beyond two photographs.
MORE_UNSEEN_PHOTOS = ("coins", "grace_hopper", "moon")
#: Where each photograph that is not in scikit-image's data folder lives.
OTHER_PLACES = {"grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")}

SPLITS = {
    "train": TRAIN_PHOTOS,
    "held-out": HELD_OUT_PHOTOS,
    "unseen": HELD_OUT_PHOTOS + MORE_UNSEEN_PHOTOS,
    "all": TRAIN_PHOTOS + HELD_OUT_PHOTOS + MORE_UNSEEN_PHOTOS,
}


class PhotosOptions(FolderOptions):
    """Which bundled photographs, and how they are cropped."""

    path: Path | None = Field(  # type: ignore[assignment]  # optional here, required in FolderOptions
        None, description="Ignored unless set: a folder used instead of scikit-image's."
    )
    split: Literal["train", "held-out", "unseen", "all"] = Field(
        "train",
        description="Training photographs, the held-out ones (astronaut, chelsea), every unseen one "
        "(those two, coins, grace_hopper, moon), or all.",
    )
    crop: int | None = Field(256, ge=1, description="HR crop size in pixels (every photograph is ≥ 300 px).")


class PhotosDataset(HrFolderDataset):
    """scikit-image's bundled photographs (10 for training, 2 held out, 3 more unseen); LR by the
    degradation."""

    name = "photos"
    Options = PhotosOptions

    def _root(self) -> Path:
        if self.options.path is not None:
            return super()._root()
        try:
            from skimage import data
        except ImportError as error:
            raise UsageError(
                f"the photos data set needs scikit-image: pip install scikit-image ({error})"
            ) from None
        return Path(data.data_dir)

    def _listing(self, root: Path) -> list[Path]:
        if self.options.path is not None:
            return super()._listing(root)
        names = SPLITS[self.options.split]
        found = {p.stem: p for p in list_images(root, tuple(self.options.include)) if p.stem in names}
        for name, (package, file) in OTHER_PLACES.items():
            path = _package_file(package, file)
            if name in names and path.is_file() and _matches(path, self.options.include):
                found[name] = path
        missing = sorted(set(names) - set(found))
        if missing and self.options.include == ["*"]:
            raise UsageError(
                f"this installation lacks the photographs {', '.join(missing)} (looked in {root})"
            )
        if not found:
            raise UsageError(f"no {self.options.split} photographs match {', '.join(self.options.include)}")
        return [found[name] for name in sorted(found)]


def _package_file(package: str, file: str) -> Path:
    """A data file inside an installed package (a path that does not exist when the package is
    missing)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return Path(package) / file
    return Path(next(iter(spec.submodule_search_locations))) / file


def _matches(path: Path, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns)
