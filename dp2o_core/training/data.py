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
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dp2o_core.atomic import atomic_path
from dp2o_core.errors import Dp2oError
from dp2o_core.imageio import read_image_tensor
from dp2o_core.stages.sample import load_prompt_files
from dp2o_core.store import ProcessInfo, RunStore
from dp2o_core.store.fingerprint import derive_seed


@dataclass(frozen=True)
class Pair:
    """One row of the pairs table: two candidates of a group and the pair's weight."""

    group_id: str
    winner: int
    loser: int
    weight: float


@dataclass
class PairBatch:
    """The tensors of a micro-batch of pairs (first dimension: the pairs)."""

    x0_winner: torch.Tensor
    x0_loser: torch.Tensor
    condition: dict[str, torch.Tensor]
    weights: torch.Tensor
    timesteps: torch.Tensor
    noise: torch.Tensor


class PairOrder:
    """Global positions 0, 1, 2, … → pair indices: each epoch a seeded permutation."""

    def __init__(self, count: int, seed: int) -> None:
        if count < 1:
            raise Dp2oError("the run has no preference pairs to train on; check the pairs stage")
        self.count = count
        self.seed = seed
        self._epochs: dict[int, list[int]] = {}

    def __getitem__(self, position: int) -> int:
        epoch, offset = divmod(position, self.count)
        if epoch not in self._epochs:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "train-order", epoch) % 2**63)
            self._epochs = {epoch: torch.randperm(self.count, generator=generator).tolist()}
        return self._epochs[epoch][offset]


class TrainingData:
    """A run's pairs, candidates, conditions and prompts, served as :class:`PairBatch` es."""

    def __init__(
        self, store: RunStore, backbone: Any, *, seed: int, cache: bool = True, swap_labels: float = 0.0
    ) -> None:
        self.store = store
        self.backbone = backbone
        self.seed = seed
        self.cache = cache
        self.pairs = swapped_labels(_read_pairs(store), swap_labels, seed)
        self.order = PairOrder(len(self.pairs), seed)
        self._candidates = {
            (row["group_id"], row["candidate"]): row
            for row in store.read_table("sample", "candidates").to_pylist()
        }
        self._groups = {row["group_id"]: row for row in store.read_table("data", "groups").to_pylist()}
        self._prompts: dict[str, dict[str, torch.Tensor]] = {}
        self._latents: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._conditions: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        missing = {p.group_id for p in self.pairs} - set(self._groups)
        if missing:
            raise Dp2oError(
                f"the pairs table names groups the data stage does not have (e.g. {sorted(missing)[0]!r}); "
                "rerun the pairs stage"
            )

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def needs_encoder(self) -> bool:
        """Whether batches encode images (caching off, or candidates without stored latents)."""
        if not self.cache:
            return True
        used = {(p.group_id, m) for p in self.pairs for m in (p.winner, p.loser)}
        return any(not self._candidates.get(key, {}).get("latent_shard") for key in used)

    @property
    def group_ids(self) -> list[str]:
        """The groups that have at least one pair."""
        return sorted({p.group_id for p in self.pairs})

    # -- preparation ---------------------------------------------------------------------------
    def prepare(
        self,
        process: ProcessInfo,
        on_start: Callable[[int], None] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Embed every prompt (from the run's stored embeddings where possible) and cache the
        condition of this process's share of the groups; returns how many were computed now."""
        self.backbone.load_prompt_cache(load_prompt_files(self.store))
        for text in sorted({self._prompt_text(g) for g in self.group_ids}):
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
        """The pairs at these global positions, with their shared timesteps and noises."""
        pairs = [self.pairs[self.order[p]] for p in positions]
        winners = torch.stack([self._x0(p.group_id, p.winner) for p in pairs]).to(device)
        losers = torch.stack([self._x0(p.group_id, p.loser) for p in pairs]).to(device)
        conditions = [self._condition(p.group_id) for p in pairs]
        prompts = [self._prompts[self._prompt_text(p.group_id)] for p in pairs]
        condition = {key: torch.cat([c[key] for c in conditions]).to(device) for key in conditions[0]} | {
            key: torch.cat([e[key] for e in prompts]).to(device) for key in prompts[0]
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
            weights=torch.tensor([p.weight for p in pairs], dtype=torch.float32, device=device),
            timesteps=torch.cat(timesteps).to(device),
            noise=torch.stack(noise).to(device),
        )

    # -- pieces --------------------------------------------------------------------------------
    def _prompt_text(self, group_id: str) -> str:
        return self._groups[group_id].get("prompt") or ""

    def _read_lr(self, group_id: str) -> torch.Tensor:
        return self.store.load_group_file("data", group_id, self._groups[group_id]["lr"], read_image_tensor)

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
            self._remember(self._conditions, group_id, load_file(str(path)))
        return self._conditions[group_id]

    def _x0(self, group_id: str, candidate: int) -> torch.Tensor:
        row = self._candidates.get((group_id, candidate))
        if row is None:
            raise Dp2oError(
                f"candidate {candidate} of group {group_id!r} is in the pairs table but not in the sample "
                "stage; rerun the pairs stage"
            )
        if self.cache and row.get("latent_shard"):
            shard = row["latent_shard"]
            if shard not in self._latents:
                from safetensors.torch import load_file

                latents = self.store.load_group_file(
                    "sample", group_id, shard, lambda path: load_file(str(path))["latents"]
                )
                self._remember(self._latents, shard, latents)
            return self._latents[shard][row["latent_index"]].float()
        image = self.store.load_group_file("sample", group_id, row["image"], read_image_tensor)
        with torch.no_grad():
            return self.backbone.encode(image)[0].float().cpu()

    @staticmethod
    def _remember(cache: OrderedDict, key: str, value: Any, size: int = 64) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > size:
            cache.popitem(last=False)


def swapped_labels(pairs: list[Pair], fraction: float, seed: int) -> list[Pair]:
    """``pairs`` with winner and loser exchanged in ``fraction`` of them (rounded), chosen by
    ``seed``: the shuffled-label control that tells learning the preferences apart from
    the effect of training as such."""
    if fraction <= 0 or not pairs:
        return pairs
    import random

    chosen = set(
        random.Random(derive_seed(seed, "swap-labels")).sample(
            range(len(pairs)), round(fraction * len(pairs))
        )
    )
    return [
        Pair(p.group_id, p.loser, p.winner, p.weight) if index in chosen else p
        for index, p in enumerate(pairs)
    ]


def _read_pairs(store: RunStore) -> list[Pair]:
    """The pairs table in a fixed order (group, winner, loser), whatever the commit order."""
    rows = store.read_table("pairs", "pairs", columns=["group_id", "winner", "loser", "weight"]).to_pylist()
    rows.sort(key=lambda r: (r["group_id"], r["winner"], r["loser"]))
    return [Pair(r["group_id"], int(r["winner"]), int(r["loser"]), float(r["weight"])) for r in rows]
