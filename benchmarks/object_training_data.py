"""Training data as dp2o read it before it was columnar: a ``Pair`` object per pair, each
epoch's permutation as a Python list, a dict per candidate and per group, and a whole
latent file read (and kept in a 64-file cache) for every candidate a batch needs.

Kept as the baseline that ``benchmarks/train_data.py`` measures :class:`TrainingData`
against. It inherits everything that did not change (prompts, conditions, noises) and
replaces only how pairs and candidates are held and read, so the two give the same batches.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from dp2o_core.store import RunStore
from dp2o_core.store.fingerprint import derive_seed
from dp2o_core.training.data import PairBatch, TrainingData, _BufferPool
from dp2o_core.training.pair_table import Pair


class _ListOrder:
    """Each epoch's permutation as a Python list (as before)."""

    def __init__(self, count: int, seed: int) -> None:
        self.count, self.seed, self._epochs = count, seed, {}

    def __getitem__(self, position: int) -> int:
        epoch, offset = divmod(position, self.count)
        if epoch not in self._epochs:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "train-order", epoch) % 2**63)
            self._epochs = {epoch: torch.randperm(self.count, generator=generator).tolist()}
        return self._epochs[epoch][offset]


class _GroupRows:
    """The data stage's rows as a dict per group (as before)."""

    def __init__(self, store: RunStore) -> None:
        self.rows = {row["group_id"]: row for row in store.read_table("data", "groups").to_pylist()}

    def prompt(self, group_id: str) -> str:
        return self.rows[group_id].get("prompt") or ""

    def lr(self, group_id: str) -> str:
        return self.rows[group_id]["lr"]


class ObjectTrainingData(TrainingData):
    """:class:`TrainingData` with the object-per-row storage and whole-file reads it had."""

    def __init__(self, store: RunStore, backbone: Any, *, seed: int, cache: bool = True) -> None:
        self.store, self.backbone, self.seed, self.cache = store, backbone, seed, cache
        rows = store.read_table(
            "pairs", "pairs", columns=["group_id", "winner", "loser", "weight"]
        ).to_pylist()
        rows.sort(key=lambda r: (r["group_id"], r["winner"], r["loser"]))
        self.object_pairs = [
            Pair(r["group_id"], int(r["winner"]), int(r["loser"]), float(r["weight"])) for r in rows
        ]
        self.order = _ListOrder(len(self.object_pairs), seed)
        self.object_candidates = {
            (row["group_id"], row["candidate"]): row
            for row in store.read_table("sample", "candidates").to_pylist()
        }
        self._groups = _GroupRows(store)  # type: ignore[assignment]
        self._prompts: dict[str, dict[str, torch.Tensor]] = {}
        self._condition_cache: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._whole_files: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._ahead: dict = {}
        self._in_use = None
        self._buffers = _BufferPool()  # (its batches are fresh tensors; nothing is reused)

    def __len__(self) -> int:
        return len(self.object_pairs)

    @property
    def group_ids(self) -> list[str]:  # type: ignore[override]
        return sorted({p.group_id for p in self.object_pairs})

    @property
    def needs_encoder(self) -> bool:  # type: ignore[override]
        return False

    def read_ahead(self, positions: Sequence[int]) -> None:
        """It read every batch when asked."""

    def _read(self, positions: Sequence[int]) -> tuple[PairBatch, dict]:
        pairs = [self.object_pairs[self.order[p]] for p in positions]
        winners = torch.stack([self._whole_file_x0(p.group_id, p.winner) for p in pairs])
        losers = torch.stack([self._whole_file_x0(p.group_id, p.loser) for p in pairs])
        conditions = [self._whole_file_condition(p.group_id) for p in pairs]
        prompts = [self._prompts[self._groups.prompt(p.group_id)] for p in pairs]
        condition = {key: torch.cat([c[key] for c in conditions]) for key in conditions[0]} | {
            key: torch.cat([e[key] for e in prompts]) for key in prompts[0]
        }
        timesteps, noise = self._timesteps_and_noise(positions, winners.shape[1:])
        batch = PairBatch(
            x0_winner=winners,
            x0_loser=losers,
            condition=condition,
            weights=torch.tensor([p.weight for p in pairs], dtype=torch.float32),
            timesteps=timesteps,
            noise=noise,
        )
        return batch, {}  # fresh tensors, no buffers to give back

    def _whole_file_condition(self, group_id: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        if group_id not in self._condition_cache:
            self._condition_cache[group_id] = load_file(str(self._condition_path(group_id)))
            while len(self._condition_cache) > 64:
                self._condition_cache.popitem(last=False)
        return self._condition_cache[group_id]

    def _whole_file_x0(self, group_id: str, candidate: int) -> torch.Tensor:
        from safetensors.torch import load_file

        row = self.object_candidates[(group_id, candidate)]
        shard = row["latent_shard"]
        if shard not in self._whole_files:
            self._whole_files[shard] = load_file(str(self.store.root / shard))["latents"]
            while len(self._whole_files) > 64:
                self._whole_files.popitem(last=False)
        self._whole_files.move_to_end(shard)
        return self._whole_files[shard][row["latent_index"]].float()
