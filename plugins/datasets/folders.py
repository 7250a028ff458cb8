"""Data sets read from folders: HR images (LR synthesised), LR/HR pairs, LR images only."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar, Literal

from dp2o_plugins.datasets.prompts import load_prompt_table, prompt_for
from pydantic import Field, model_validator

from dp2o_core import DataItem, DataSample, Dataset, PluginOptions
from dp2o_core.errors import UsageError
from dp2o_core.imageio import BadImageError, list_images, read_image
from dp2o_core.store.fingerprint import derive_seed


class FolderOptions(PluginOptions):
    """Options every folder data set shares."""

    path: Path = Field(..., description="Folder that holds the images (searched recursively).")
    scale: int = Field(4, ge=1, le=16, description="Upscaling factor from LR to HR.")
    crop: int | None = Field(
        None, ge=1, description="HR crop size in pixels (a multiple of scale); none keeps the whole image."
    )
    crop_mode: Literal["center", "random"] = Field(
        "center",
        description="Where the crop sits: the centre, or a position seeded by the run seed and item id.",
    )
    crops_per_image: int = Field(
        1, ge=1, description="Random crops taken from each image (items ID-crop0, ID-crop1, …); needs crop."
    )
    max_images: int | None = Field(None, ge=1, description="Use only the first N items (in id order).")
    include: list[str] = Field(["*"], description="Glob patterns of files to use, e.g. ['*.png', 'train/*'].")
    prompts: Path | None = Field(
        None, description="Prompts file (.csv, .jsonl or .txt); a .txt beside an image also gives its prompt."
    )
    workers: int = Field(4, ge=1, le=64, description="Threads that decode images in parallel.")

    @model_validator(mode="after")
    def _crop_fits_scale(self):
        if self.crop is not None and self.crop % self.scale:
            raise ValueError(f"crop {self.crop} is not a multiple of scale {self.scale}")
        if self.crops_per_image > 1 and (self.crop is None or self.crop_mode != "random"):
            raise ValueError("crops_per_image > 1 needs crop=SIZE and crop_mode=random")
        return self


class _FolderDataset(Dataset):
    """Shared listing, prompts and crop logic of the folder data sets."""

    Options: ClassVar[type[PluginOptions]] = FolderOptions

    def _root(self) -> Path:
        root = Path(self.options.path).expanduser()
        if not root.is_dir():
            raise UsageError(f"data folder {root} does not exist or is not a folder (option path of --data)")
        return root

    def _listing(self, root: Path) -> list[Path]:
        images = list_images(root, tuple(self.options.include))
        if not images:
            raise UsageError(
                f"no images in {root} matching {', '.join(self.options.include)} "
                "(PNG, JPEG, WebP, TIFF and BMP files are read)"
            )
        return images

    def _prompts(self) -> dict[str, str]:
        return load_prompt_table(Path(self.options.prompts)) if self.options.prompts else {}

    def _single_folder_items(self, as_hr: bool) -> list[DataItem]:
        """Items of a one-folder data set: each image is an HR source or an LR input."""
        root = self._root()
        table = self._prompts()
        items = []
        crops = self.options.crops_per_image if as_hr else 1
        for path in self._listing(root):
            # a listing may add files from elsewhere (photos does): their id is their name
            home = root if path.is_relative_to(root) else path.parent
            prompt = prompt_for(path, home, table)
            hr, lr = (path, None) if as_hr else (None, path)
            base = _relative_id(path, home)
            for index in range(crops):
                item_id = f"{base}-crop{index}" if crops > 1 else base
                items.append(DataItem(item_id, hr=hr, lr=lr, prompt=prompt))
        return self._limit(items)

    def _limit(self, items: list[DataItem]) -> list[DataItem]:
        seen: dict[str, Path | None] = {}
        for item in items:
            if item.id in seen:
                raise UsageError(
                    f"two files give the data item id {item.id!r}: {seen[item.id]} and {item.hr or item.lr}; "
                    "rename one (ids are paths without their suffix)"
                )
            seen[item.id] = item.hr or item.lr
        items = sorted(items, key=lambda i: i.id)
        return items[: self.options.max_images] if self.options.max_images else items

    def _crop_origin(
        self, item: DataItem, seed: int, height: int, width: int, size: int, step: int
    ) -> tuple[int, int]:
        """(top, left) of a size×size crop in a height×width image, on a grid of ``step``."""
        import numpy as np

        rows, cols = (height - size) // step, (width - size) // step
        if self.options.crop_mode == "center":
            return rows // 2 * step, cols // 2 * step
        rng = np.random.default_rng(derive_seed(seed, item.id, "crop"))
        return int(rng.integers(0, rows + 1)) * step, int(rng.integers(0, cols + 1)) * step

    def _map(self, function, items: Sequence[DataItem]) -> list:
        if len(items) <= 1 or self.options.workers == 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(max_workers=self.options.workers) as pool:
            return list(pool.map(function, items))


def _relative_id(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


class HrFolderDataset(_FolderDataset):
    """A folder of HR images; LR inputs are synthesised by the run's degradation."""

    name = "hr-folder"
    synthesises_lr = True

    def items(self) -> list[DataItem]:
        """Every image of the folder, as an HR source."""
        return self._single_folder_items(as_hr=True)

    def load(self, items, seed, degradation=None):
        """Read and crop each HR image, then degrade images of one size in one batch."""
        import numpy as np
        import torch

        if degradation is None:
            raise UsageError(
                "the hr-folder data set needs a degradation (--degradation realesrgan or bicubic)"
            )
        scale, crop = self.options.scale, self.options.crop

        def read(item: DataItem):
            assert item.hr is not None  # every item of an HR folder has one
            try:
                hr = read_image(item.hr, min_size=crop or scale)
            except BadImageError as error:
                return error
            height, width = hr.shape[:2]
            size_h, size_w = (crop, crop) if crop else (height - height % scale, width - width % scale)
            if crop:
                top, left = self._crop_origin(item, seed, height, width, crop, 1)
            else:
                top, left = 0, 0
            return hr[top : top + size_h, left : left + size_w], (top, left)

        loaded = self._map(read, items)
        results: list = [None] * len(items)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, value in enumerate(loaded):
            if isinstance(value, BadImageError):
                results[index] = value
            else:
                by_shape.setdefault(value[0].shape, []).append(index)
        for indices in by_shape.values():
            hr_batch = (
                torch.from_numpy(np.stack([loaded[i][0] for i in indices])).permute(0, 3, 1, 2).float() / 255
            )
            seeds = [derive_seed(seed, items[i].id) for i in indices]
            lr_batch = degradation.degrade(hr_batch, seeds, scale)
            lr_arrays = (lr_batch * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for i, lr, item_seed in zip(indices, lr_arrays, seeds, strict=True):
                results[i] = DataSample(items[i], lr=lr, hr=loaded[i][0], crop=loaded[i][1], seed=item_seed)
        return results


class PairedOptions(FolderOptions):
    """Options of a paired LR/HR folder."""

    hr_dir: str | None = Field(
        None, description="Sub-folder with the HR images (found by itself: HR, test_HR, train_HR, gt)."
    )
    lr_dir: str | None = Field(
        None, description="Sub-folder with the LR images (found by itself: LR, test_LR, train_LR, lq)."
    )
    strip: list[str] = Field(
        ["_HR", "_LR", "_LR2", "_LR3", "_LR4", "_x1", "_x2", "_x3", "_x4"],
        description="Name endings removed before matching LR to HR files (RealSR, DRealSR naming).",
    )


#: The (HR, LR) sub-folder pairs of common paired test sets, tried in order when hr_dir and
#: lr_dir are not given: plain, DRealSR's (Test_x4/test_HR beside test_LR) and BasicSR's.
PAIRED_LAYOUTS = (("HR", "LR"), ("test_HR", "test_LR"), ("train_HR", "train_LR"), ("gt", "lq"), ("GT", "LQ"))


class PairedFolderDataset(_FolderDataset):
    """LR and HR images matched by file name (RealSR / DRealSR style test sets)."""

    name = "paired-folder"
    Options = PairedOptions

    def _key(self, path: Path, root: Path) -> str:
        relative = path.relative_to(root).with_suffix("")
        stem = relative.name
        for ending in sorted(self.options.strip, key=len, reverse=True):
            if ending and stem.endswith(ending):
                stem = stem[: -len(ending)]
                break
        return (relative.parent / stem).as_posix()

    def items(self) -> list[DataItem]:
        root = self._root()
        hr_root, lr_root = self._folders(root)
        hr_files, lr_files = (
            self._side_by_side(root) if not (hr_root.is_dir() or lr_root.is_dir()) else ([], [])
        )
        if hr_files and lr_files:  # RealSR's layout: Canon_001_HR.png beside Canon_001_LR4.png
            hr_root = lr_root = root
        else:
            for folder, option in ((hr_root, "hr_dir"), (lr_root, "lr_dir")):
                if not folder.is_dir():
                    raise UsageError(
                        f"paired data: {folder} is not a folder (option {option} of --data), and {root} "
                        "holds no *_HR / *_LR<scale> files side by side (RealSR's layout)"
                        + _layout_hint(root)
                    )
            hr_files, lr_files = self._listing(hr_root), self._listing(lr_root)
        lr_by_key = {self._key(p, lr_root): p for p in lr_files}
        table = self._prompts()
        items, unmatched = [], []
        for hr in hr_files:
            key = self._key(hr, hr_root)
            lr = lr_by_key.pop(key, None)
            if lr is None:
                unmatched.append(hr.name)
                continue
            items.append(
                DataItem(
                    key, hr=hr, lr=lr, prompt=prompt_for(lr, lr_root, table) or prompt_for(hr, hr_root, table)
                )
            )
        if not items:
            raise UsageError(
                f"paired data: no LR file in {lr_root} matches an HR file in {hr_root} "
                f"(names are compared without the endings {self.options.strip})"
            )
        items = self._limit(items)
        if self.options.scale == 1:
            _refuse_unregistered(items)
        return items

    def _folders(self, root: Path) -> tuple[Path, Path]:
        """The HR and LR folders: the options', else the first known layout present under root."""
        if self.options.hr_dir is None and self.options.lr_dir is None:
            for hr_dir, lr_dir in PAIRED_LAYOUTS:
                if (root / hr_dir).is_dir() and (root / lr_dir).is_dir():
                    return root / hr_dir, root / lr_dir
        return root / (self.options.hr_dir or "HR"), root / (self.options.lr_dir or "LR")

    def _side_by_side(self, root: Path) -> tuple[list[Path], list[Path]]:
        """HR and LR files kept in one folder, told apart by their name endings (``_HR``
        against ``_LR``, ``_LR<k>``): RealSR's layout. Empty lists when the folder holds no
        such pair. (DRealSR's ``_x4`` HR and ``_x1`` LR live in separate folders.)"""
        if not root.is_dir():
            return [], []
        images = list_images(root, tuple(self.options.include))
        hr_endings = ("_HR",)
        lr_endings = tuple(e for e in self.options.strip if e.startswith("_LR"))
        hr = [p for p in images if p.stem.endswith(hr_endings)]
        lr = [p for p in images if p.stem.endswith(lr_endings) and p not in hr]
        return hr, lr

    def load(self, items, seed, degradation=None):
        """Read both images, align HR to LR×scale and crop both at matching positions. An LR
        registered at the HR's size (RealSR's LR4 files are) is reduced ×scale first (Pillow's
        bicubic), so the backbone's own ×scale upsampling gives the HR geometry back; with
        ``scale=1`` it is kept as it is (for a backbone with ``upscale=1``, as the DP²O-SR
        authors run RealSR), and a pair of two sizes is refused."""
        scale, crop = self.options.scale, self.options.crop

        def read(item: DataItem):
            assert item.lr is not None and item.hr is not None  # paired items have both
            try:
                hr = read_image(item.hr, min_size=crop or scale)
                lr = read_image(item.lr, min_size=1)
                if lr.shape[:2] == hr.shape[:2] and scale > 1:
                    lr = reduce_registered_lr(lr, scale)
                elif scale == 1 and lr.shape[:2] != hr.shape[:2]:
                    raise BadImageError(
                        item.lr, f"is {lr.shape[1]}×{lr.shape[0]} but its HR {item.hr} is {hr.shape[1]}×"
                        f"{hr.shape[0]}: with scale=1 each LR must be registered at its HR's size"
                    )  # fmt: skip
                if crop and min(lr.shape[:2]) < crop // scale:
                    raise BadImageError(
                        item.lr, f"too small: {lr.shape[1]}×{lr.shape[0]} pixels, at least "
                        f"{crop // scale}×{crop // scale} needed for crop={crop}"
                    )  # fmt: skip
            except BadImageError as error:
                return error
            lr_h, lr_w = lr.shape[:2]
            if hr.shape[0] < lr_h * scale or hr.shape[1] < lr_w * scale:
                return BadImageError(
                    item.hr,
                    f"HR is {hr.shape[1]}×{hr.shape[0]} but LR {item.lr} × {scale} needs "
                    f"{lr_w * scale}×{lr_h * scale}",
                )
            hr = hr[: lr_h * scale, : lr_w * scale]
            top = left = 0
            if crop:
                lr_crop = crop // scale
                top, left = self._crop_origin(item, seed, lr_h * scale, lr_w * scale, crop, scale)
                lr = lr[top // scale : top // scale + lr_crop, left // scale : left // scale + lr_crop]
                hr = hr[top : top + crop, left : left + crop]
            return DataSample(item, lr=lr, hr=hr, crop=(top, left), seed=derive_seed(seed, item.id))

        return self._map(read, items)


def _layout_hint(root: Path) -> str:
    """'; did you mean path=…' when a known HR/LR folder pair lies up to two levels below root
    (DRealSR unpacks as DRealSR/x4/Test_x4/test_HR, …)."""
    if not root.is_dir():
        return ""
    for hr_dir, lr_dir in PAIRED_LAYOUTS:
        for depth in ("*", "*/*"):
            found = sorted(p.parent for p in root.glob(f"{depth}/{hr_dir}") if (p.parent / lr_dir).is_dir())
            if found:
                return f"; did you mean path={found[0]}?"
    return ""


def _refuse_unregistered(items: list[DataItem]) -> None:
    """With ``scale=1`` every LR must have its HR's size (a registered pair, RealSR's LR4 files);
    the pairs that do not are all named at once, from the files' headers, before any work. A
    file whose header cannot be read is left to :meth:`load` (and ``--on-bad-image``)."""
    from dp2o_core.imageio import BadImageError, image_size

    differing = []
    for item in items:
        assert item.lr is not None and item.hr is not None  # paired items have both
        try:
            lr, hr = image_size(item.lr), image_size(item.hr)
        except BadImageError:
            continue
        if lr != hr:
            differing.append(f"{item.lr} is {lr[0]}×{lr[1]}, {item.hr.name} {hr[0]}×{hr[1]}")
    if differing:
        shown = "; ".join(differing[:5]) + (f"; and {len(differing) - 5} more" if len(differing) > 5 else "")
        raise UsageError(
            f"paired data with scale=1: {len(differing)} LR image(s) do not have their HR's size ({shown}). "
            "scale=1 is for LR images registered at the HR's size; fix or remove those pairs, or give "
            "the data the LR's real scale (scale=4)"
        )


def reduce_registered_lr(lr, scale: int):
    """An LR stored at its HR's size, reduced ×``scale`` with Pillow's bicubic filter (the
    sides rounded down): what an ×``scale`` backbone takes as its input."""
    import numpy as np
    from PIL import Image

    height, width = lr.shape[0] // scale, lr.shape[1] // scale
    reduced = Image.fromarray(lr).resize((max(1, width), max(1, height)), Image.Resampling.BICUBIC)
    return np.asarray(reduced, dtype=np.uint8).copy()


class LrFolderDataset(_FolderDataset):
    """A folder of LR images only: for no-reference rewards and for upscaling."""

    name = "lr-folder"

    def items(self) -> list[DataItem]:
        """Every image of the folder, as an LR input."""
        return self._single_folder_items(as_hr=False)

    def load(self, items, seed, degradation=None):
        """Read each LR image; ``crop`` (an HR size) crops crop/scale LR pixels."""
        scale, crop = self.options.scale, self.options.crop

        def read(item: DataItem):
            assert item.lr is not None  # every item of an LR folder has one
            lr_crop = crop // scale if crop else None
            try:
                lr = read_image(item.lr, min_size=lr_crop or 1)
            except BadImageError as error:
                return error
            top = left = 0
            if lr_crop:
                top, left = self._crop_origin(item, seed, lr.shape[0], lr.shape[1], lr_crop, 1)
                lr = lr[top : top + lr_crop, left : left + lr_crop]
            return DataSample(item, lr=lr, hr=None, crop=(top, left), seed=derive_seed(seed, item.id))

        return self._map(read, items)
