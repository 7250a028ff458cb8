"""The Dataset interface: where LR inputs (and their HR references) come from."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from dp2o_core.interfaces.base import Implementation

if TYPE_CHECKING:
    import numpy as np

    from dp2o_core.imageio import BadImageError
    from dp2o_core.interfaces.degradation import Degradation


@dataclass(frozen=True)
class DataItem:
    """One input of a data set — one group of candidates in every later table.

    ``id`` is stable across runs and machines: the path relative to the data set's root,
    with '/' separators and without the suffix. ``hr`` and ``lr`` are source files (either
    may be None); ``prompt`` comes from a sidecar file where there is one.
    """

    id: str
    hr: Path | None
    lr: Path | None
    prompt: str | None = None


@dataclass
class DataSample:
    """An item loaded for use: 8-bit RGB arrays (H×W×3 ``uint8``).

    ``hr`` is None for LR-only data. ``crop`` is (top, left) of the HR crop in the source
    image (LR coordinates for LR-only data); ``seed`` is the per-item seed that made
    the crop and the degradation.
    """

    item: DataItem
    lr: np.ndarray
    hr: np.ndarray | None
    crop: tuple[int, int]
    seed: int


class Dataset(Implementation):
    """Lists the items of a data set and loads them as LR (and HR) images.

    :meth:`items` must be cheap (no decoding): it decides the groups of a run.
    :meth:`load` decodes, crops and — for HR-only data — degrades a batch of items,
    deterministically for a given (item id, seed). A file that cannot be used comes back
    as a :class:`~dp2o_core.imageio.BadImageError` in its slot, so the caller decides
    whether to stop or skip.

    Example::

        from dp2o_core import Dataset, DataItem, hookimpl

        class ListDataset(Dataset):
            \"\"\"HR images named in a text file, one path per line.\"\"\"

            name = "list"
            ...

        @hookimpl
        def register_datasets(register):
            register(ListDataset)
    """

    kind: ClassVar[str] = "dataset"
    #: True when LR inputs are made from HR images by the run's degradation.
    synthesises_lr: ClassVar[bool] = False

    @abstractmethod
    def items(self) -> list[DataItem]:
        """Every item, in a stable order, without decoding images."""

    @abstractmethod
    def load(
        self, items: Sequence[DataItem], seed: int, degradation: Degradation | None = None
    ) -> list[DataSample | BadImageError]:
        """Load ``items``; ``seed`` is the run's seed, mixed with each item id.

        ``degradation`` makes the LR images of data sets that synthesise them.
        """

    def item_signature(self, item: DataItem) -> str:
        """A digest of what decides ``item``'s sample besides the options and the seed: its
        files' paths, sizes and modification times and its prompt.

        The data stage keeps an item's stored images while its signature is unchanged and
        redoes only the items whose signature changed (a fixed bad file, say). Override it
        when an item depends on more than its files (e.g. a remote object's version).
        """
        from dp2o_core.store.fingerprint import file_signature, fingerprint

        return fingerprint([file_signature(item.hr), file_signature(item.lr), item.prompt])
