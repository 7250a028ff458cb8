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
        self._latent_files: OrderedDict[str, Any] = OrderedDict()
        self._conditions: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._reading = threading.Lock()  # the caches above are shared with the read-ahead thread
        self._reader: ThreadPoolExecutor | None = None
        self._ahead: dict[tuple[int, ...], Future] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    @cached_property
    def needs_encoder(self) -> bool:
        """Whether batches encode images (caching off, or candidates without stored latents)."""
        if not self.cache:
            return True
        rows = np.concatenate(
            [self._candidates.rows(self.pairs.group, self.pairs.winner, self.pairs.group_ids),
             self._candidates.rows(self.pairs.group, self.pairs.loser, self.pairs.group_ids)]
        )  # fmt: skip
        return bool((self._candidates.shard[rows] < 0).any())

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
        ahead in the background if :meth:`read_ahead` named these positions)."""
        ahead = self._ahead.pop(tuple(positions), None)
        batch = ahead.result() if ahead is not None else self._read(positions)
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
        while len(self._ahead) >= 2:  # never more than two batches held
            self._ahead.pop(next(iter(self._ahead))).cancel()
        self._ahead[tuple(positions)] = self._reader.submit(self._read, list(positions))

    def _read(self, positions: Sequence[int]) -> PairBatch:
        """The batch at these positions on the CPU."""
        with self._reading:
            index = np.array([self.order[p] for p in positions], dtype=np.int64)
            groups = self.pairs.group[index].tolist()
            winners = torch.stack(
                [self._x0(g, int(m)) for g, m in zip(groups, self.pairs.winner[index], strict=True)]
            )
            losers = torch.stack(
                [self._x0(g, int(m)) for g, m in zip(groups, self.pairs.loser[index], strict=True)]
            )
            group_ids = [self.pairs.group_ids[g] for g in groups]
            conditions = [self._condition(g) for g in group_ids]
            prompts = [self._prompts[self._groups.prompt(g)] for g in group_ids]
        condition = {key: torch.cat([c[key] for c in conditions]) for key in conditions[0]} | {
            key: torch.cat([e[key] for e in prompts]) for key in prompts[0]
        }
        timesteps, noise = [], []
        for position in positions:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "train-noise", position) % 2**63)
            timesteps.append(self.backbone.sample_timesteps(1, generator=generator).cpu())
            noise.append(torch.randn(winners.shape[1:], generator=generator))
        return PairBatch(
            x0_winner=winners,
            x0_loser=losers,
            condition=condition,
            weights=torch.tensor(self.pairs.weight[index], dtype=torch.float32),
            timesteps=torch.cat(timesteps),
            noise=torch.stack(noise),
        )

    # -- pieces --------------------------------------------------------------------------------
    def _read_lr(self, group_id: str) -> torch.Tensor:
        return self.store.load_group_file("data", group_id, self._groups.lr(group_id), read_image_tensor)

    def _condition_path(self, group_id: str) -> Path:
        return self.store.group_path("sample", "conditions", group_id, suffix=".safetensors")

    def _condition(self, group_id: str) -> dict[str, torch.Tensor]:
        if not self.cache:
            with torch.no_grad():
                return {
                    k: v.float().cpu()
                    for k, v in self.backbone.encode_condition(self._read_lr(group_id)).items()
                }
        if group_id not in self._conditions:
            from safetensors.torch import load_file

            path = self._condition_path(group_id)
            if not path.exists():
                raise Dp2oError(
                    f"the cached condition of group {group_id!r} is missing ({path}); run prepare first"
                )
            _remember(self._conditions, group_id, load_file(str(path)))
        return self._conditions[group_id]

    def _x0(self, group: int, candidate: int) -> torch.Tensor:
        """Candidate ``candidate`` of group code ``group``: its row of the group's latent
        file (only that row is read), or its image encoded."""
        group_id = self.pairs.group_ids[group]
        row = self._candidates.row(group, candidate, group_id)
        shard = self._candidates.shard_path(row)
        if self.cache and shard is not None:
            if shard not in self._latent_files:
                from safetensors import safe_open

                opened = self.store.load_group_file(
                    "sample", group_id, shard, lambda path: safe_open(str(path), framework="pt")
                )
                _remember(self._latent_files, shard, (opened, opened.get_slice("latents")), size=256)
            at = int(self._candidates.latent_index[row])
            return self._latent_files[shard][1][at : at + 1][0].float()
        image = self.store.load_group_file("sample", group_id, self._candidates.image(row), read_image_tensor)
        with torch.no_grad():
            return self.backbone.encode(image)[0].float().cpu()


class CandidateIndex:
    """Where each candidate of the pairs' groups is: its latent file and row, and (when
    images are encoded) its image, as arrays indexed by (group code, candidate)."""

    def __init__(self, store: RunStore, group_ids: list[str], *, images: bool) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        columns = ["group_id", "candidate", "latent_shard", "latent_index"]
        table = store.read_table("sample", "candidates", columns=columns)
        code = pc.fill_null(
            pc.index_in(table.column("group_id"), value_set=pa.array(group_ids)), -1
        ).to_numpy()
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
        self._kept = kept
        self._images: Any = None
        if images:
            self.add_images(store)

    def add_images(self, store: RunStore) -> None:
        """Keep the candidates' image paths too (for encoding images; costs their strings)."""
        if self._images is None:
            images = store.read_table("sample", "candidates", columns=["image"]).column("image")
            self._images = images.take(self._kept)

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

    def row(self, group: int, candidate: int, group_id: str) -> int:
        """The row of candidate ``candidate`` of group code ``group``."""
        row = self.slot[group * self.span + candidate] if 0 <= candidate < self.span else -1
        if row < 0:
            self._missing(group_id, candidate)
        return int(row)

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
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)


def swapped_labels(pairs: PairTable, fraction: float, seed: int) -> PairTable:
    """``pairs`` with winner and loser exchanged in ``fraction`` of them (:meth:`PairTable.swapped`)."""
    return pairs.swapped(fraction, seed)
