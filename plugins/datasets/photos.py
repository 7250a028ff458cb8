"""``photos``: the photographs that ship with scikit-image, as an HR data set.

They are on every machine dp2o installs on (scikit-image comes with pyiqa), so a run needs
no data download. Two are kept out of training (``split=held-out``) for evaluation on
images the model never saw.
"""

from __future__ import annotations

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
#: Photographs kept out of training.
HELD_OUT_PHOTOS = ("astronaut", "chelsea")


class PhotosOptions(FolderOptions):
    """Which bundled photographs, and how they are cropped."""

    path: Path | None = Field(  # type: ignore[assignment]  # optional here, required in FolderOptions
        None, description="Ignored unless set: a folder used instead of scikit-image's."
    )
    split: Literal["train", "held-out", "all"] = Field(
        "train", description="Training photographs, the held-out ones (astronaut, chelsea), or all."
    )
    crop: int | None = Field(256, ge=1, description="HR crop size in pixels (every photograph is ≥ 300 px).")


class PhotosDataset(HrFolderDataset):
    """scikit-image's bundled photographs (10 for training, 2 held out); LR by the degradation."""

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
        names = {
            "train": TRAIN_PHOTOS,
            "held-out": HELD_OUT_PHOTOS,
            "all": TRAIN_PHOTOS + HELD_OUT_PHOTOS,
        }[self.options.split]
        found = {p.stem: p for p in list_images(root, tuple(self.options.include)) if p.stem in names}
        missing = sorted(set(names) - set(found))
        if missing and self.options.include == ["*"]:
            raise UsageError(f"scikit-image in {root} lacks the photographs {', '.join(missing)}")
        if not found:
            raise UsageError(f"no {self.options.split} photographs match {', '.join(self.options.include)}")
        return [found[name] for name in sorted(found)]
