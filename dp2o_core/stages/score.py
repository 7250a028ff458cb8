"""The ``score`` stage: raw scores of every candidate for every metric the reward needs.

Reads the candidates table (stage ``sample``) and the HR references (stage ``data``),
scores each group's candidates in batches and writes one row per candidate to the scores
table: ``group_id``, ``candidate`` and one float column per metric name. Raw scores are
kept so rewards can be recombined later without scoring again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dp2o_core.errors import Dp2oError
from dp2o_core.imageio import read_image, read_image_tensor
from dp2o_core.interfaces import RewardModel
from dp2o_core.options import RUNTIME
from dp2o_core.pipeline.checks import metric_size_checks
from dp2o_core.pipeline.context import RunContext, StageRun
from dp2o_core.pipeline.stage import Stage
from dp2o_core.preflight import Check
from dp2o_core.specs import Resolved
from dp2o_core.store import ProcessInfo, RunStore


def score_stage_config(reward: RewardModel, resolved: Resolved) -> dict[str, Any]:
    """What decides the scores: the metrics (with their library versions) and the reward's
    options, less those that change only how fast scores come (its runtime options)."""
    return {
        "reward": resolved.fingerprint_record((RUNTIME,)),
        "metrics": [
            {"name": m.name, "mode": m.mode, "lower_better": m.lower_better, "version": m.version}
            for m in reward.metrics()
        ],
    }


def candidates_by_group(store: RunStore) -> dict[str, list[tuple[int, str]]]:
    """{group: [(candidate index, image path), …]} from the candidates table, sorted by index."""
    table = store.read_table("sample", "candidates", columns=["group_id", "candidate", "image"])
    groups: dict[str, list[tuple[int, str]]] = {}
    for group_id, candidate, image in zip(
        table.column("group_id").to_pylist(),
        table.column("candidate").to_pylist(),
        table.column("image").to_pylist(),
        strict=True,
    ):
        groups.setdefault(group_id, []).append((candidate, image))
    for rows in groups.values():
        rows.sort()
    return groups


def run_score_stage(
    store: RunStore,
    reward: RewardModel,
    config: Mapping[str, Any],
    *,
    process: ProcessInfo | None = None,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Score this process's share of the groups; returns how many groups it scored now."""
    import numpy as np
    import torch

    candidates = candidates_by_group(store)
    needs_reference = any(m.mode == "FR" for m in reward.metrics())
    references: dict[str, str | None] = {}
    if needs_reference:
        groups_table = store.read_table("data", "groups", columns=["group_id", "hr"])
        references = dict(
            zip(
                groups_table.column("group_id").to_pylist(),
                groups_table.column("hr").to_pylist(),
                strict=True,
            )
        )
    scored = 0
    with store.open_stage("score", config=config, group_ids=list(candidates), process=process) as writer:
        if on_start is not None:
            on_start(len(writer.todo))
        for group_id in writer.todo:
            rows = candidates[group_id]
            images = np.stack(
                [store.load_group_file("sample", group_id, image, read_image) for _, image in rows]
            )
            batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
            reference = None
            if needs_reference:
                hr = references.get(group_id)
                if hr is None:
                    raise Dp2oError(
                        f"group {group_id!r} has no HR image but the reward has full-reference metrics; "
                        "use no-reference metrics only for LR-only data"
                    )
                reference = store.load_group_file("data", group_id, hr, read_image_tensor)
            scores = reward.score(batch, reference)
            check_scores(scores, group_id, [candidate for candidate, _ in rows])
            writer.add_group(
                group_id,
                scores=[
                    {"candidate": candidate, **{name: float(values[i]) for name, values in scores.items()}}
                    for i, (candidate, _) in enumerate(rows)
                ],
            )
            scored += 1
            if on_progress is not None:
                on_progress(1)
    return scored


def check_scores(scores: Mapping[str, Any], group_id: str, candidates: list[int]) -> None:
    """Every metric gave one finite score per candidate of the group, else a
    :class:`Dp2oError` naming the metric, the group and the candidate (nothing of the group is
    stored, so the stage never counts a group with a NaN score as done)."""
    import math

    for name, values in scores.items():
        values = list(values)
        if len(values) != len(candidates):
            raise Dp2oError(
                f"metric {name!r} gave {len(values)} scores for the {len(candidates)} candidates of "
                f"group {group_id!r}; nothing of that group was stored"
            )
        for candidate, value in zip(candidates, values, strict=True):
            if not math.isfinite(float(value)):
                raise Dp2oError(
                    f"metric {name!r} scored candidate {candidate} of group {group_id!r} {float(value)}; "
                    "nothing of that group was stored (the groups before it are kept). A metric that "
                    "cannot score such an image (a flat or too small crop) needs another reward, or data "
                    "without such images"
                )


class ScoreStage(Stage):
    """Raw scores of every candidate for every metric the reward needs."""

    name = "score"
    unit = "candidates"

    def components(self, ctx: RunContext) -> tuple[str, ...]:
        return ("reward",)

    def config(self, ctx: RunContext) -> dict[str, Any]:
        return score_stage_config(ctx.build("reward"), ctx.component("reward"))

    def checks(self, ctx: RunContext) -> list[Check]:
        return [*super().checks(ctx), *metric_size_checks(ctx)]

    def run(self, ctx: RunContext, config: dict[str, Any]) -> StageRun:
        sample_config = (ctx.store.record("sample") or {}).get("config", {})
        per_group = int(sample_config.get("num_candidates", 0) or 0) or 1
        with ctx.reporter.progress([(self.name, "groups")]) as [(start, advance)]:
            scored = run_score_stage(
                ctx.store,
                ctx.build("reward"),
                config,
                process=ctx.process,
                on_start=start,
                on_progress=advance,
            )
        return StageRun(units=per_group * scored, result=scored)
