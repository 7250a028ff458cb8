"""The ``sample`` stage: M candidates per group from the frozen backbone, with their seeds.

For each group (one LR input of the ``data`` stage) the backbone makes M candidates in
batched calls — several groups per call where the backbone asks for it
(:meth:`Backbone.groups_per_call`, when M is below its batch size); each candidate's seed is
recorded — derived from the run seed, the group id
and the candidate index, or, with a shared noise bank, ``seed + m`` for candidate m of
every group (as the paper's code indexes its noise bank). Candidate images go to PNG, their
latents to one safetensors file per group (so training never re-encodes them), and the
prompt embeddings to one file per distinct prompt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from dp2o_core.atomic import atomic_path
from dp2o_core.imageio import read_image_tensor, write_png
from dp2o_core.interfaces import Backbone
from dp2o_core.options import RUNTIME, TRAINING
from dp2o_core.pipeline.checks import candidates_bytes
from dp2o_core.pipeline.context import RunContext, StageRun
from dp2o_core.pipeline.stage import Stage
from dp2o_core.preflight import Check, free_disk_check
from dp2o_core.specs import Resolved
from dp2o_core.store import ProcessInfo, RunStore
from dp2o_core.store.fingerprint import derive_seed

#: Option roles that do not change the candidates: speed and memory, and what training would
#: update (``lora`` — weights to load — does change them and stays).
NOT_SAMPLING = (RUNTIME, TRAINING)


def candidate_seeds(seed: int, group_id: str, count: int, shared_noise: bool) -> list[int]:
    """The seeds of a group's candidates."""
    if shared_noise:
        return [seed + m for m in range(count)]
    return [derive_seed(seed, group_id, "candidate", m) for m in range(count)]


def sample_stage_config(backbone: Resolved, seed: int, count: int, shared_noise: bool) -> dict[str, Any]:
    """What decides the candidates: the backbone and its options, the seeds, M."""
    return {
        "backbone": backbone.fingerprint_record(NOT_SAMPLING),
        "seed": seed,
        "num_candidates": count,
        "shared_noise": shared_noise,
    }


def prompt_file(store: RunStore, prompt: str):
    """Where the embeddings of one prompt text are kept."""
    digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:24]
    return store.stage_dir("sample") / "prompts" / f"{digest}.safetensors"


def run_sample_stage(
    store: RunStore,
    backbone: Backbone,
    config: Mapping[str, Any],
    *,
    seed: int,
    count: int,
    shared_noise: bool = False,
    process: ProcessInfo | None = None,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Sample this process's share of the groups; returns how many groups it sampled now."""
    import torch
    from safetensors.torch import save_file

    groups = {row["group_id"]: row for row in store.read_table("data", "groups").to_pylist()}
    backbone.load_prompt_cache(load_prompt_files(store))
    sampled = 0
    with store.open_stage("sample", config=config, group_ids=list(groups), process=process) as writer:
        if on_start is not None:
            on_start(len(writer.todo) * count)
        per_call = max(1, backbone.groups_per_call(count))
        for batch in same_size_batches(writer.todo, per_call, lambda g: _read_lr(store, groups[g])):
            lrs = [lr for _, lr in batch]
            seeds = [candidate_seeds(seed, group_id, count, shared_noise) for group_id, _ in batch]
            prompts = [groups[group_id].get("prompt") or "" for group_id, _ in batch]
            result = backbone.sample(torch.cat(lrs), seeds, prompts)
            _store_prompts(store, backbone, save_file)
            for index, (group_id, _) in enumerate(batch):
                _write_group(store, writer, group_id, result, index, seeds[index])
                sampled += 1
                if on_progress is not None:
                    on_progress(count)
    return sampled


def _read_lr(store: RunStore, row: Mapping[str, Any]):
    return store.load_group_file("data", row["group_id"], row["lr"], read_image_tensor)


def same_size_batches(todo, per_call: int, read_lr):
    """``todo``'s entries (groups, inputs, files) with their LR images, in order, as lists of up
    to ``per_call`` ``(entry, lr)`` pairs whose LR images have one size (a batch needs one
    shape): what one :meth:`Backbone.sample` call gets. The sample stage, ``dp2o eval`` and
    ``dp2o upscale`` pack their inputs with it."""
    batch: list = []
    for group_id in todo:
        lr = read_lr(group_id)
        if batch and (len(batch) == per_call or batch[0][1].shape != lr.shape):
            yield batch
            batch = []
        batch.append((group_id, lr))
    if batch:
        yield batch


def _write_group(store: RunStore, writer, group_id: str, result, index: int, seeds) -> None:
    """Candidate ``index`` of a sample call's result: PNGs, one latent shard, the group's rows."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    latent_path = None
    if result.latents is not None:
        latent_path = store.group_path("sample", "latents", group_id, suffix=".safetensors")
        with atomic_path(latent_path) as tmp:
            save_file({"latents": result.latents[index].contiguous().cpu()}, str(tmp))
    images = (result.images[index] * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    rows = []
    for m, (image, candidate_seed) in enumerate(zip(images, seeds, strict=True)):
        path = store.group_path("sample", "images", group_id, f"{m:03d}.png")
        write_png(path, np.ascontiguousarray(image))
        rows.append(
            {
                "candidate": m,
                "seed": candidate_seed,
                "image": store.relative(path),
                "latent_shard": store.relative(latent_path) if latent_path else None,
                "latent_index": m if latent_path else None,
            }
        )
    writer.add_group(group_id, candidates=rows)


def _store_prompts(store: RunStore, backbone: Backbone, save_file) -> None:
    """Write every prompt the backbone has embedded and the run does not hold yet."""
    for prompt, embeddings in backbone.prompt_cache().items():
        path = prompt_file(store, prompt)
        if embeddings and not path.exists():
            tensors = {k: v.contiguous().cpu() for k, v in embeddings.items()}
            with atomic_path(path) as tmp:
                save_file(tensors, str(tmp), metadata={"prompt": prompt})


def load_prompt_files(store: RunStore) -> dict[str, dict[str, Any]]:
    """Prompt embeddings stored in the run: {text: {name: tensor}}."""
    from safetensors import safe_open

    cache = {}
    for path in sorted((store.stage_dir("sample") / "prompts").glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get("prompt")
            if text is not None:
                cache[text] = {key: handle.get_tensor(key) for key in handle.keys()}
    return cache


class SampleStage(Stage):
    """M candidates per LR input from the frozen backbone."""

    name = "sample"
    unit = "candidates"

    def components(self, ctx: RunContext) -> tuple[str, ...]:
        return ("backbone",)

    def config(self, ctx: RunContext) -> dict[str, Any]:
        settings = ctx.config.sample
        return sample_stage_config(
            ctx.component(ctx.base_backbone),
            ctx.seed,
            settings.num_candidates,
            settings.shared_noise,
        )

    def checks(self, ctx: RunContext) -> list[Check]:
        estimate = candidates_bytes(ctx)
        disk = [] if estimate is None else [free_disk_check(ctx.store.root, estimate, "the candidates")]
        return [*super().checks(ctx), *disk]

    def run(self, ctx: RunContext, config: dict[str, Any]) -> StageRun:
        settings = ctx.config.sample
        with ctx.reporter.progress([(self.name, "images")]) as [(start, advance)]:
            sampled = run_sample_stage(
                ctx.store,
                ctx.build("backbone"),
                config,
                seed=ctx.seed,
                count=settings.num_candidates,
                shared_noise=settings.shared_noise,
                process=ctx.process,
                on_start=start,
                on_progress=advance,
            )
        return StageRun(units=settings.num_candidates * sampled, result=sampled)
