"""The pairs a training run reads, held as NumPy columns: no Python object per pair.

At the paper's scale a run has 7.68 M pairs; a ``Pair`` object each would be gigabytes on
every process of a multi-GPU job before the first step. :class:`PairTable` holds a group
code, the winner, the loser and the weight per pair (20 bytes), sorted by group, winner
and loser — the order the pairs always had, so the same seed still draws the same pairs.
:class:`PairOrder` keeps each epoch's permutation as one array.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dp2o_core.errors import Dp2oError
from dp2o_core.store import RunStore
from dp2o_core.store.fingerprint import derive_seed


@dataclass(frozen=True)
class Pair:
    """One row of the pairs table: two candidates of a group and the pair's weight."""

    group_id: str
    winner: int
    loser: int
    weight: float


class PairTable:
    """Pairs as columns: ``group`` (a code into ``group_ids``, which is sorted), ``winner``,
    ``loser`` and ``weight``; indexing gives a :class:`Pair`."""

    def __init__(self, group_ids: list[str], group: Any, winner: Any, loser: Any, weight: Any) -> None:
        self.group_ids = group_ids
        self.group = np.asarray(group, dtype=np.int32)
        self.winner = np.asarray(winner, dtype=np.int32)
        self.loser = np.asarray(loser, dtype=np.int32)
        self.weight = np.asarray(weight, dtype=np.float64)
        self._used: list[str] | None = None

    @classmethod
    def read(cls, store: RunStore) -> PairTable:
        """The run's pairs table sorted by group, winner, loser, whatever the commit order.
        Columns are read one at a time, so the peak is about one string column."""
        import pyarrow as pa
        import pyarrow.compute as pc

        names = store.read_table("pairs", "pairs", columns=["group_id"]).column("group_id")
        ids = pc.unique(names).sort()
        group = pc.index_in(names, value_set=ids).to_numpy()
        del names
        numbers = store.read_table("pairs", "pairs", columns=["winner", "loser", "weight"])
        winner = numbers.column("winner").to_numpy()
        loser = numbers.column("loser").to_numpy()
        if len(group) and max(winner.max(), loser.max()) < 2**16 and min(winner.min(), loser.min()) >= 0:
            # (group, winner, loser) is unique: one sort of a packed key orders them as lexsort
            # would; the key is built in place, so it costs two 8-byte arrays, not five
            key = group.astype(np.int64)
            key <<= 32
            part = winner.astype(np.int64)
            part <<= 16
            key |= part
            del part
            key |= loser
            order = np.argsort(key)
            del key
        else:
            order = np.lexsort((loser, winner, group))
        # each column reordered and its unordered copy dropped before the next
        group = group[order]
        winner, loser = winner[order], loser[order]
        weight = numbers.column("weight").to_numpy()[order]
        del numbers, order
        table = cls(ids.to_pylist(), group, winner, loser, weight)
        pa.default_memory_pool().release_unused()  # the columns read above go back to the system
        return table

    @classmethod
    def of(cls, pairs: Sequence[Pair]) -> PairTable:
        """A table of these pairs, in this order (tests, small tools)."""
        ids = sorted({p.group_id for p in pairs})
        code = {g: i for i, g in enumerate(ids)}
        return cls(
            ids,
            [code[p.group_id] for p in pairs],
            [p.winner for p in pairs],
            [p.loser for p in pairs],
            [p.weight for p in pairs],
        )

    def __len__(self) -> int:
        return len(self.group)

    def __getitem__(self, index: int) -> Pair:
        return Pair(
            self.group_ids[int(self.group[index])],
            int(self.winner[index]),
            int(self.loser[index]),
            float(self.weight[index]),
        )

    def __iter__(self) -> Iterator[Pair]:
        return (self[index] for index in range(len(self)))

    def used_groups(self) -> list[str]:
        """The groups that have at least one pair, sorted."""
        if self._used is None:
            self._used = [self.group_ids[code] for code in np.unique(self.group).tolist()]
        return self._used

    def swapped(self, fraction: float, seed: int) -> PairTable:
        """These pairs with winner and loser exchanged in ``fraction`` of them (rounded),
        chosen by ``seed``: the shuffled-label control that tells learning the preferences
        apart from the effect of training as such."""
        if fraction <= 0 or not len(self):
            return self
        import random

        chosen = random.Random(derive_seed(seed, "swap-labels")).sample(
            range(len(self)), round(fraction * len(self))
        )
        flip: Any = np.zeros(len(self), dtype=bool)
        flip[chosen] = True
        return PairTable(
            self.group_ids,
            self.group,
            np.where(flip, self.loser, self.winner),
            np.where(flip, self.winner, self.loser),
            self.weight,
        )


class PairOrder:
    """Global positions 0, 1, 2, … → pair indices: each epoch a seeded permutation."""

    def __init__(self, count: int, seed: int) -> None:
        if count < 1:
            raise Dp2oError("the run has no preference pairs to train on; check the pairs stage")
        self.count = count
        self.seed = seed
        self._epochs: dict[int, Any] = {}

    def __getitem__(self, position: int) -> int:
        epoch, offset = divmod(position, self.count)
        return int(self._permutation(epoch)[offset])

    def _permutation(self, epoch: int) -> Any:
        if epoch not in self._epochs:
            import torch

            generator = torch.Generator().manual_seed(derive_seed(self.seed, "train-order", epoch) % 2**63)
            # one epoch at a time: a step that spans two epochs recomputes the other (cheap)
            permutation = torch.randperm(self.count, generator=generator).numpy()
            self._epochs = {epoch: permutation.astype(np.int32) if self.count < 2**31 else permutation}
        return self._epochs[epoch]
