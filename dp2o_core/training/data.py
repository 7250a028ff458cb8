"""Training data: the run's preference pairs with the tensors a DPO step needs.

Every pair refers to two candidates of one group. A step needs their x₀ (the candidate
latents the sample stage cached, so no VAE encode), the group's condition (the backbone's
``encode_condition`` of the LR image, computed once per group and cached in the run beside
the candidates) and its prompt embeddings (stored by the sample stage, so no text encoder).
With caching off, candidates are read from their PNG files and encoded every step.

Which pairs a step uses is a pure function of the run seed and the step's position in a
sequence of per-epoch permutations of the pairs table, and so is each pair's timestep and
noise: a resumed run, or one with another number of processes or another micro-batch size,
sees exactly the same pairs, timesteps and noises.

At the paper's scale (7.68 M pairs of 30,000 groups × 64 candidates) nothing here is a
Python object per pair or per candidate: the pairs are NumPy columns
(:mod:`~dp2o_core.training.pair_table`), the candidates an index of arrays, and a
micro-batch reads just its candidates' rows of the latent files. The trainer names the
next micro-batch while it computes this one (:meth:`TrainingData.read_ahead`), and a
background thread reads it meanwhile.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dp2o_core.atomic import atomic_path
from dp2o_core.errors import Dp2oError
from dp2o_core.imageio import read_image_tensor
from dp2o_core.stages.sample import load_prompt_files
from dp2o_core.store import ProcessInfo, RunStore
from dp2o_core.store.fingerprint import derive_seed
from dp2o_core.training.pair_table import Pair, PairOrder, PairTable
from dp2o_core.training.tensor_files import TensorFile

__all__ = ["Pair", "PairBatch", "PairOrder", "PairTable", "TrainingData", "swapped_labels"]


@dataclass
class PairBatch:
    """The tensors of a micro-batch of pairs (first dimension: the pairs)."""

    x0_winner: torch.Tensor
    x0_loser: torch.Tensor
    condition: dict[str, torch.Tensor]
    weights: torch.Tensor
    timesteps: torch.Tensor
    noise: torch.Tensor


class TrainingData:
    """A run's pairs, candidates, conditions and prompts, served as :class:`PairBatch` es."""

    def __init__(
        self, store: RunStore, backbone: Any, *, seed: int, cache: bool = True, swap_labels: float = 0.0
    ) -> None:
        self.store = store
        self.backbone = backbone
        self.seed = seed
        self.cache = cache
        self.pairs = PairTable.read(store).swapped(swap_labels, seed)
        self.order = PairOrder(len(self.pairs), seed)
        self._groups = _GroupFiles(store, self.pairs.group_ids)
        self._candidates = CandidateIndex(store, self.pairs.group_ids, images=not cache)
        self._prompts: dict[str, dict[str, torch.Tensor]] = {}
        self._latent_files: OrderedDict[str, TensorFile] = OrderedDict()
        self._reading = threading.Lock()  # the caches above are shared with the read-ahead thread
        self._reader: ThreadPoolExecutor | None = None
        self._ahead: dict[tuple[int, ...], Future] = {}
        self._buffers = _BufferPool()
        self._in_use: dict[str, torch.Tensor] | None = None  # the buffers of the batch handed out last

    def __len__(self) -> int:
        return len(self.pairs)

    @cached_property
    def needs_encoder(self) -> bool:
        """Whether batches encode images (caching off, or candidates without stored latents)."""
        if not self.cache:
            return True
        if not (self._candidates.shard < 0).any():  # every candidate has its latent stored
            return False
        pairs = self.pairs
        for start in range(0, len(pairs), 1_000_000):  # the pairs' candidates, a slice at a time
            part = slice(start, start + 1_000_000)
            for side in (pairs.winner[part], pairs.loser[part]):
                if (
                    self._candidates.shard[self._candidates.rows(pairs.group[part], side, pairs.group_ids)]
                    < 0
                ).any():
                    return True
        return False

    @property
    def group_ids(self) -> list[str]:
        """The groups that have at least one pair."""
        return self.pairs.used_groups()

    # -- preparation ---------------------------------------------------------------------------
    def prepare(
        self,
        process: ProcessInfo,
        on_start: Callable[[int], None] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Embed every prompt (from the run's stored embeddings where possible) and cache the
        condition of this process's share of the groups; returns how many were computed now."""
        if self.needs_encoder and self.cache:  # some candidates have no stored latents
            self._candidates.add_images(self.store)
        self.backbone.load_prompt_cache(load_prompt_files(self.store))
        for text in sorted({self._groups.prompt(g) for g in self.group_ids}):
            self._prompts[text] = {k: v.detach() for k, v in self.backbone.encode_prompts([text]).items()}
        self.backbone.release_text_encoders()
        if not self.cache:
            return 0
        todo = [g for g in process.share(self.group_ids) if not self._condition_path(g).exists()]
        if on_start is not None:
            on_start(len(todo))
        from safetensors.torch import save_file

        for group_id in todo:
            with torch.no_grad():
                condition = self.backbone.encode_condition(self._read_lr(group_id))
            tensors = {k: v.detach().float().contiguous().cpu() for k, v in condition.items()}
            with atomic_path(self._condition_path(group_id)) as tmp:
                save_file(tensors, str(tmp))
            if on_progress is not None:
                on_progress(1)
        return len(todo)

    # -- batches -----------------------------------------------------------------------------
    def batch(self, positions: Sequence[int], device: torch.device | str) -> PairBatch:
        """The pairs at these global positions, with their shared timesteps and noises (read
        ahead in the background if :meth:`read_ahead` named these positions).

        On the CPU the batch's latents and conditions live in reused buffers, which go back
        to the pool when the next batch is handed out: be done with a batch before asking
        for the next (the trainer is)."""
        ahead = self._ahead.pop(tuple(positions), None)
        batch, buffers = ahead.result() if ahead is not None else self._read(positions)
        if self._in_use is not None:  # the caller is done with the batch before this one
            self._buffers.release(self._in_use)
        self._in_use = buffers
        return PairBatch(
            x0_winner=batch.x0_winner.to(device),
            x0_loser=batch.x0_loser.to(device),
            condition={key: value.to(device) for key, value in batch.condition.items()},
            weights=batch.weights.to(device),
            timesteps=batch.timesteps.to(device),
            noise=batch.noise.to(device),
        )

    def read_ahead(self, positions: Sequence[int]) -> None:
        """Start reading the batch at these positions in a background thread; the next
        :meth:`batch` for them takes it from there. Encoding images (caching off) is left to
        the caller's thread, where the encoder runs."""
        if not self.cache or self.needs_encoder or tuple(positions) in self._ahead:
            return
        if self._reader is None:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="dp2o-read-ahead")
        while len(self._ahead) >= 2:  # the batch about to be used and the one after it
            dropped = self._ahead.pop(next(iter(self._ahead)))
            if not dropped.cancel():  # already read: its buffers go back when it is done
                dropped.add_done_callback(lambda done: self._buffers.release(done.result()[1]))
        self._ahead[tuple(positions)] = self._reader.submit(self._read, list(positions))

    def _read(self, positions: Sequence[int]) -> tuple[PairBatch, dict[str, torch.Tensor]]:
        """The batch at these positions on the CPU."""
        with self._reading:
            buffers = self._buffers.acquire()
            index = np.array([self.order[p] for p in positions], dtype=np.int64)
            groups = self.pairs.group[index]
            group_ids = [self.pairs.group_ids[g] for g in groups.tolist()]
            winners, losers = self._x0_pairs(
                groups, self.pairs.winner[index], self.pairs.loser[index], buffers
            )
            condition = self._conditions(group_ids, buffers)
            prompts = [self._prompts[self._groups.prompt(g)] for g in group_ids]
        condition |= {key: torch.cat([e[key] for e in prompts]) for key in prompts[0]}
        timesteps, noise = self._timesteps_and_noise(positions, winners.shape[1:])
        batch = PairBatch(
            x0_winner=winners,
            x0_loser=losers,
            condition=condition,
            weights=torch.tensor(self.pairs.weight[index], dtype=torch.float32),
            timesteps=timesteps,
            noise=noise,
        )
        return batch, buffers

    def _timesteps_and_noise(self, positions: Sequence[int], shape: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Each position's timestep and noise, from a generator seeded by the run seed and
        the position alone (the same whatever the process count or micro-batch size)."""
        timesteps, noise = [], []
        for position in positions:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "train-noise", position) % 2**63)
            timesteps.append(self.backbone.sample_timesteps(1, generator=generator).cpu())
            noise.append(torch.randn(shape, generator=generator))
        return torch.cat(timesteps), torch.stack(noise)

    # -- pieces --------------------------------------------------------------------------------
    def _read_lr(self, group_id: str) -> torch.Tensor:
        return self.store.load_group_file("data", group_id, self._groups.lr(group_id), read_image_tensor)

    def _condition_path(self, group_id: str) -> Path:
        return self.store.group_path("sample", "conditions", group_id, suffix=".safetensors")

    def _conditions(self, group_ids: list[str], buffers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The groups' conditions stacked: read from the cached files straight into the
        batch tensors (several files at once: the reads release the GIL), or (caching off)
        encoded from the LR images."""
        if not self.cache:
            with torch.no_grad():
                encoded = [self.backbone.encode_condition(self._read_lr(g)) for g in group_ids]
            return {key: torch.cat([c[key].float().cpu() for c in encoded]) for key in encoded[0]}
        stacked: dict[str, torch.Tensor] = {}

        def read(at: int, file: TensorFile) -> None:
            for key, entry in file.entries.items():
                rows = entry.shape[0]
                file.read_rows(key, 0, stacked[key][at * rows : (at + 1) * rows])

        def read_group(at: int) -> None:
            with self._condition_file(group_ids[at]) as file:
                read(at, file)

        with self._condition_file(group_ids[0]) as first:  # its layout sizes the batch tensors
            for key, e in first.entries.items():
                shape = (len(group_ids) * e.shape[0], *e.shape[1:])
                stacked[key] = _buffer(buffers, f"condition-{key}", shape, e.dtype)
            read(0, first)
        list(self._io.map(read_group, range(1, len(group_ids))))
        return {key: value.float() for key, value in stacked.items()}

    def _condition_file(self, group_id: str) -> TensorFile:
        path = self._condition_path(group_id)
        try:
            return TensorFile(path)
        except FileNotFoundError:
            raise Dp2oError(
                f"the cached condition of group {group_id!r} is missing ({path}); run prepare first"
            ) from None

    @cached_property
    def _io(self) -> ThreadPoolExecutor:
        """Threads that read a batch's condition files side by side."""
        return ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="dp2o-read")

    def _x0_pairs(
        self, groups: Any, winners: Any, losers: Any, buffers: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x₀ of the pairs' winners and of their losers. When every candidate has a stored
        latent in its group's one latent file (the usual case), each pair's two rows are read
        from that file, opened once, and the pairs side by side on the read threads (opening
        and reading release the GIL); otherwise side by side, candidate by candidate
        (:meth:`_x0_batch`)."""
        candidates = self._candidates
        rows_w = candidates.rows(groups, winners, self.pairs.group_ids)
        rows_l = candidates.rows(groups, losers, self.pairs.group_ids)
        shards_w, shards_l = candidates.shard[rows_w], candidates.shard[rows_l]
        if not self.cache or not ((shards_w >= 0).all() and (shards_w == shards_l).all()):
            return (
                self._x0_batch(groups, winners, buffers, "winner"),
                self._x0_batch(groups, losers, buffers, "loser"),
            )
        group_ids = [self.pairs.group_ids[g] for g in groups.tolist()]
        entry = self._latent_file(group_ids[0], int(rows_w[0])).entries["latents"]
        shape = (len(rows_w), *entry.shape[1:])
        out_w, out_l = (
            _buffer(buffers, "winner", shape, entry.dtype),
            _buffer(buffers, "loser", shape, entry.dtype),
        )
        index_w, index_l = candidates.latent_index[rows_w].tolist(), candidates.latent_index[rows_l].tolist()

        def read_pair(at: int) -> None:
            shard = candidates.shard_path(int(rows_w[at]))
            with self.store.load_group_file("sample", group_ids[at], str(shard), TensorFile) as file:
                file.read_rows("latents", int(index_w[at]), out_w[at : at + 1])
                file.read_rows("latents", int(index_l[at]), out_l[at : at + 1])

        list(self._io.map(read_pair, range(len(rows_w))))
        return out_w.float(), out_l.float()

    def _x0_batch(
        self, groups: Any, candidates: Any, buffers: dict[str, torch.Tensor], side: str
    ) -> torch.Tensor:
        """x₀ of these candidates (group codes, candidate numbers): rows of the groups'
        latent files read straight into the batch; a candidate without a stored latent
        (or every one, caching off) is encoded from its image."""
        rows = self._candidates.rows(groups, candidates, self.pairs.group_ids)
        group_ids = [self.pairs.group_ids[g] for g in groups.tolist()]
        stored = self._candidates.shard[rows] >= 0 if self.cache else np.zeros(len(rows), dtype=bool)
        if not stored.all():
            return torch.stack(
                [
                    self._latent_row(group_id, row) if has else self._encoded(group_id, row)
                    for group_id, row, has in zip(group_ids, rows.tolist(), stored.tolist(), strict=True)
                ]
            )
        batch: Any = None
        for at, (group_id, row) in enumerate(zip(group_ids, rows.tolist(), strict=True)):
            file = self._latent_file(group_id, row)
            if batch is None:
                entry = file.entries["latents"]
                batch = _buffer(buffers, side, (len(rows), *entry.shape[1:]), entry.dtype)
            file.read_rows("latents", int(self._candidates.latent_index[row]), batch[at : at + 1])
        return batch.float()

    def _latent_row(self, group_id: str, row: int) -> torch.Tensor:
        """One candidate's stored latent, in a tensor of its own."""
        file = self._latent_file(group_id, row)
        entry = file.entries["latents"]
        out = torch.empty((1, *entry.shape[1:]), dtype=entry.dtype)
        file.read_rows("latents", int(self._candidates.latent_index[row]), out)
        return out[0].float()

    def _latent_file(self, group_id: str, row: int) -> TensorFile:
        """The open latent file of a candidate's row (the last 256 stay open)."""
        shard = self._candidates.shard_path(row)
        assert shard is not None
        if shard not in self._latent_files:
            _remember(
                self._latent_files,
                shard,
                self.store.load_group_file("sample", group_id, shard, TensorFile),
                size=256,
            )
        self._latent_files.move_to_end(shard)
        return self._latent_files[shard]

    def _encoded(self, group_id: str, row: int) -> torch.Tensor:
        """A candidate's x₀ encoded from its image file."""
        image = self.store.load_group_file("sample", group_id, self._candidates.image(row), read_image_tensor)
        with torch.no_grad():
            return self.backbone.encode(image)[0].float().cpu()


class _BufferPool:
    """Reused CPU tensors for batches, one set per batch being read or in use. A batch's
    tensors are tens of megabytes (SD2: a 3 MB condition per pair), and freshly allocated
    memory costs a page fault per 4 KiB on first write — measured, more than reading the
    files — so a set goes back to the pool when its batch is done and is refilled."""

    def __init__(self) -> None:
        self._free: list[dict[str, torch.Tensor]] = []
        self._lock = threading.Lock()

    def acquire(self) -> dict[str, torch.Tensor]:
        with self._lock:
            return self._free.pop() if self._free else {}

    def release(self, buffers: dict[str, torch.Tensor]) -> None:
        with self._lock:
            self._free.append(buffers)


def _buffer(
    buffers: dict[str, torch.Tensor], name: str, shape: tuple[int, ...], dtype: torch.dtype
) -> torch.Tensor:
    """The set's tensor ``name`` of this shape and dtype (made when it changes)."""
    found = buffers.get(name)
    if found is None or tuple(found.shape) != tuple(shape) or found.dtype != dtype:
        found = buffers[name] = torch.empty(shape, dtype=dtype)
    return found


class CandidateIndex:
    """Where each candidate of the pairs' groups is: its latent file and row, and (when
    images are encoded) its image, as arrays indexed by (group code, candidate)."""

    def __init__(self, store: RunStore, group_ids: list[str], *, images: bool) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        self._group_ids = pa.array(group_ids, pa.string())
        columns = ["group_id", "candidate", "latent_shard", "latent_index"]
        table = store.read_table("sample", "candidates", columns=columns)
        code = self._codes(table)
        kept = np.flatnonzero(code >= 0)
        table, code = table.take(kept), code[kept]
        candidate = table.column("candidate").to_numpy().astype(np.int64)
        self.span = int(candidate.max()) + 1 if len(candidate) else 1
        self.slot: Any = np.full(len(group_ids) * self.span, -1, dtype=np.int64)
        self.slot[code * self.span + candidate] = np.arange(len(code))
        shards = pc.dictionary_encode(table.column("latent_shard")).combine_chunks()
        self.shard = pc.fill_null(shards.indices, -1).to_numpy().astype(np.int32)
        self.shards: list[str] = shards.dictionary.to_pylist()
        self.latent_index = pc.fill_null(table.column("latent_index"), -1).to_numpy()
        self._images: Any = None
        if images:
            self.add_images(store)

    def _codes(self, table: Any) -> Any:
        """Each candidate row's group code (-1: a group without pairs)."""
        import pyarrow.compute as pc

        return pc.fill_null(pc.index_in(table.column("group_id"), value_set=self._group_ids), -1).to_numpy()

    def _rows_of(self, table: Any) -> Any:
        """Where each row of a candidates table stands in this index (-1: not in it)."""
        code, candidate = self._codes(table), table.column("candidate").to_numpy().astype(np.int64)
        inside = (code >= 0) & (candidate >= 0) & (candidate < self.span)
        rows: Any = np.full(len(code), -1, dtype=np.int64)
        rows[inside] = self.slot[code[inside] * self.span + candidate[inside]]
        return rows

    def add_images(self, store: RunStore) -> None:
        """Keep the candidates' image paths too (for encoding images; costs their strings),
        placed by (group, candidate) like the other columns."""
        if self._images is None:
            table = store.read_table("sample", "candidates", columns=["group_id", "candidate", "image"])
            rows = self._rows_of(table)
            kept = np.flatnonzero(rows >= 0)
            self._images = table.column("image").take(kept[np.argsort(rows[kept])])

    def rows(self, group: Any, candidate: Any, group_ids: list[str]) -> Any:
        """Rows of these (group code, candidate) pairs; a missing one is an error naming it."""
        candidate = np.asarray(candidate, dtype=np.int64)
        inside = (candidate >= 0) & (candidate < self.span)
        rows = np.where(
            inside,
            self.slot[np.asarray(group, dtype=np.int64) * self.span + np.where(inside, candidate, 0)],
            -1,
        )
        if (rows < 0).any():
            at = int(np.flatnonzero(rows < 0)[0])
            self._missing(group_ids[int(np.asarray(group)[at])], int(candidate[at]))
        return rows

    def shard_path(self, row: int) -> str | None:
        code = int(self.shard[row])
        return self.shards[code] if code >= 0 else None

    def image(self, row: int) -> str:
        if self._images is None:
            raise Dp2oError("candidate images were not loaded; build TrainingData with cache=False")
        return self._images[row].as_py()

    @staticmethod
    def _missing(group_id: str, candidate: int) -> None:
        raise Dp2oError(
            f"candidate {candidate} of group {group_id!r} is in the pairs table but not in the sample "
            "stage; rerun the pairs stage"
        )


class _GroupFiles:
    """Each pairs group's LR file and prompt, from the data stage."""

    def __init__(self, store: RunStore, group_ids: list[str]) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        groups = store.read_table("data", "groups", columns=["group_id", "lr", "prompt"])
        found = pc.index_in(pa.array(group_ids, pa.string()), value_set=groups.column("group_id"))
        if found.null_count:
            missing = group_ids[int(np.flatnonzero(pc.is_null(found).to_numpy(zero_copy_only=False))[0])]
            raise Dp2oError(
                f"the pairs table names groups the data stage does not have (e.g. {missing!r}); "
                "rerun the pairs stage"
            )
        rows = found.to_numpy()
        self._code = {g: i for i, g in enumerate(group_ids)}
        self._lr = groups.column("lr").take(rows).to_pylist()
        self._prompt = groups.column("prompt").take(rows).to_pylist()

    def lr(self, group_id: str) -> str:
        return self._lr[self._code[group_id]]

    def prompt(self, group_id: str) -> str:
        return self._prompt[self._code[group_id]] or ""


def _remember(cache: OrderedDict, key: str, value: Any, size: int = 64) -> None:
    """Keep ``value`` as the newest of at most ``size``; what drops out is closed if it can be."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        _, dropped = cache.popitem(last=False)
        if hasattr(dropped, "close"):
            dropped.close()


def swapped_labels(pairs: PairTable, fraction: float, seed: int) -> PairTable:
    """``pairs`` with winner and loser exchanged in ``fraction`` of them (:meth:`PairTable.swapped`)."""
    return pairs.swapped(fraction, seed)
