"""The ``data`` stage: list the data set, load each item once, store LR (and HR) images.

Every later stage reads its inputs from here, so the degradation runs once per item and
the run keeps exactly the LR/HR images it was trained and scored on. Groups are sharded
over processes, committed in batches and skipped on a rerun when already committed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dp2o_core.imageio import BadImageError, write_png
from dp2o_core.interfaces import DataItem, DataSample, Dataset, Degradation, Prompter
from dp2o_core.interfaces.prompter import sample_prompts
from dp2o_core.pipeline.checks import data_items, items_check
from dp2o_core.pipeline.context import RunContext, StageRun
from dp2o_core.pipeline.stage import Stage
from dp2o_core.preflight import Check
from dp2o_core.store import ProcessInfo, RunStore

OnBadImage = Literal["error", "skip"]


@dataclass
class DataStageResult:
    """What this process did: groups written, bad images skipped, groups already done."""

    written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    already_done: int = 0
    total: int = 0


#: The prompter that keeps the data set's own prompts: runs made with it keep the fingerprint
#: they had before prompters existed.
DEFAULT_PROMPTER = "sidecar"


def data_stage_config(
    dataset: Dataset,
    dataset_record: Mapping[str, Any],
    degradation_record: Mapping[str, Any] | None,
    seed: int,
    prompter_record: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What decides the whole stage's output: the data set's options, the degradation, the
    seed, the prompter (where it is not the default). Each item's own files are in
    :func:`item_signatures`."""
    config = {
        "dataset": dict(dataset_record),
        "degradation": dict(degradation_record) if degradation_record and dataset.synthesises_lr else None,
        "seed": seed,
    }
    if prompter_record is not None and prompter_record.get("name") != DEFAULT_PROMPTER:
        config["prompter"] = dict(prompter_record)
    return config


def item_signatures(dataset: Dataset, items: list[DataItem] | None = None) -> dict[str, str]:
    """Item id → :meth:`Dataset.item_signature`: a changed file redoes only its item."""
    return {item.id: dataset.item_signature(item) for item in (dataset.items() if items is None else items)}


def run_data_stage(
    store: RunStore,
    dataset: Dataset,
    config: Mapping[str, Any],
    *,
    degradation: Degradation | None,
    seed: int,
    prompter: Prompter | None = None,
    process: ProcessInfo | None = None,
    on_bad_image: OnBadImage = "error",
    batch_size: int = 16,
    signatures: Mapping[str, str] | None = None,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> DataStageResult:
    """Write this process's share of the data set into ``store`` (see module docstring).

    With ``on_bad_image="error"`` the first unusable file stops the stage with a
    :class:`BadImageError` (groups finished before it stay committed); with ``"skip"`` it
    is listed in the ``bad_images`` table and the stage goes on. ``signatures`` are the items'
    :func:`item_signatures` when the caller has them already. ``prompter`` writes each input's
    prompt (without one, the data set's own is kept).
    """
    items = dataset.items()
    by_id = {item.id: item for item in items}
    result = DataStageResult(total=len(items))
    with store.open_stage(
        "data",
        config=config,
        group_ids=list(by_id),
        process=process,
        group_signatures=item_signatures(dataset, items) if signatures is None else signatures,
    ) as writer:
        result.already_done = writer.share_total - len(writer.todo)
        todo = [by_id[group_id] for group_id in writer.todo]
        if on_start is not None:
            on_start(len(todo))
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            loaded_batch = list(dataset.load(batch, seed, degradation=degradation))
            samples = [loaded for loaded in loaded_batch if not isinstance(loaded, BadImageError)]
            prompts = iter(sample_prompts(prompter, samples))
            for item, loaded in zip(batch, loaded_batch, strict=True):
                if isinstance(loaded, BadImageError):
                    if on_bad_image == "error":
                        raise loaded
                    writer.add_group(
                        item.id, bad_images=[{"path": str(loaded.path), "reason": loaded.reason}]
                    )
                    result.skipped.append((str(loaded.path), loaded.reason))
                else:
                    writer.add_group(item.id, groups=[_store_sample(store, loaded, next(prompts))])
                    result.written += 1
            if on_progress is not None:
                on_progress(len(batch))
    return result


def _store_sample(store: RunStore, sample: DataSample, prompt: str | None) -> dict[str, Any]:
    group_id = sample.item.id
    lr_path = store.group_path("data", "lr", group_id, suffix=".png")
    write_png(lr_path, sample.lr)
    hr_rel = None
    if sample.hr is not None:
        hr_path = store.group_path("data", "hr", group_id, suffix=".png")
        write_png(hr_path, sample.hr)
        hr_rel = store.relative(hr_path)
    return {
        "lr": store.relative(lr_path),
        "hr": hr_rel,
        "source_lr": str(sample.item.lr) if sample.item.lr else None,
        "source_hr": str(sample.item.hr) if sample.item.hr else None,
        "prompt": prompt,
        "crop_top": sample.crop[0],
        "crop_left": sample.crop[1],
        "lr_height": sample.lr.shape[0],
        "lr_width": sample.lr.shape[1],
        "seed": sample.seed,
    }


class DataStage(Stage):
    """List, load and degrade the data set once; store LR (and HR) images."""

    name = "data"
    unit = "images"

    def components(self, ctx: RunContext) -> tuple[str, ...]:
        return () if self.kept(ctx) else ("data", "degradation", "prompter")

    def kept(self, ctx: RunContext) -> str | None:
        if ctx.round is not None and not ctx.config.rounds.fresh_data:
            return "round 1's data"
        return "no --data given; using the run's" if ctx.keeps_run_data else None

    def config(self, ctx: RunContext) -> dict[str, Any]:
        return data_stage_config(
            ctx.build("data"),
            ctx.component("data").as_record(),
            ctx.component("degradation").as_record(),
            ctx.seed,
            ctx.component("prompter").as_record(),
        )

    def group_signatures(self, ctx: RunContext) -> Mapping[str, str]:
        # every item's files are listed and stat'ed once: for the fingerprint and for the writer
        if "item_signatures" not in ctx.computed:
            ctx.computed["item_signatures"] = item_signatures(ctx.build("data"), data_items(ctx))
        return ctx.computed["item_signatures"]

    def checks(self, ctx: RunContext) -> list[Check]:
        return [*super().checks(ctx), *items_check(ctx, "data")]

    def run(self, ctx: RunContext, config: dict[str, Any]) -> StageRun:
        if ctx.config.data.name is None:
            name = ctx.component("data").registration.name
            ctx.reporter.announce(self.name, f"no --data given — using the default data set {name!r}")
        dataset = ctx.build("data")
        with ctx.reporter.progress([(self.name, "groups")]) as [(start, advance)]:
            result = run_data_stage(
                ctx.store,
                dataset,
                config,
                degradation=ctx.build("degradation") if dataset.synthesises_lr else None,
                seed=ctx.seed,
                prompter=ctx.build("prompter"),
                process=ctx.process,
                on_bad_image=ctx.options.on_bad_image,
                batch_size=ctx.options.data_batch_size,
                signatures=self.group_signatures(ctx),
                on_start=start,
                on_progress=advance,
            )
        return StageRun(units=len(ctx.store.done_groups("data")), result=result)
