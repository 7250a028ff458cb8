"""The pairs computation as dp2o did it before it was vectorised: one group at a time,
Python lists and dicts, everything in memory.

Kept as the baseline that ``benchmarks/paper_scale.py`` measures the vectorised stage
against, and the reference that tests compare its results with (same rewards, pairs and
weights). It calls the plugins' per-group methods (``reward``, ``select``, ``weigh``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from dp2o_core.errors import Dp2oError
from dp2o_core.interfaces import GroupPairs, PairSelector, RewardModel, Weighting
from dp2o_core.stages.pairs import PairsSummary


@dataclass
class PairsResult:
    """Rows of the rewards and pairs tables, by group, and their summary."""

    rewards: dict[str, list[dict[str, Any]]]
    pairs: dict[str, list[dict[str, Any]]]
    summary: PairsSummary


def scores_by_group(table: Any, metrics: list[str]) -> dict[str, tuple[list[int], dict[str, list[float]]]]:
    """Check a scores table and split it into {group: (candidates, {metric: scores})}."""
    columns = set(table.column_names)
    missing = [name for name in ["group_id", "candidate", *metrics] if name not in columns]
    if missing:
        raise Dp2oError(
            f"the scores table has no column {', '.join(repr(m) for m in missing)} "
            f"(columns: {', '.join(sorted(columns))}); score with a reward that includes "
            f"{'them' if len(missing) > 1 else 'it'} or choose a reward whose metrics are present"
        )
    group_ids = table.column("group_id").to_pylist()
    candidates = table.column("candidate").to_pylist()
    values = {name: table.column(name).to_pylist() for name in metrics}
    groups: dict[str, tuple[list[int], dict[str, list[float]]]] = {}
    for row, (group_id, candidate) in enumerate(zip(group_ids, candidates, strict=True)):
        indices, scores = groups.setdefault(group_id, ([], {name: [] for name in metrics}))
        indices.append(int(candidate))
        for name in metrics:
            value = values[name][row]
            if value is None or not math.isfinite(float(value)):
                raise Dp2oError(
                    f"the scores table has a {'missing' if value is None else 'non-finite'} {name!r} score "
                    f"({value}) for candidate {candidate} of group {group_id!r}; rescore that group"
                )
            scores[name].append(float(value))
    for group_id, (indices, _) in groups.items():
        if len(indices) < 2:
            raise Dp2oError(
                f"group {group_id!r} has {len(indices)} candidate; pairs need at least two per group"
            )
        if len(set(indices)) != len(indices):
            raise Dp2oError(f"group {group_id!r} lists a candidate index twice in the scores table")
    return groups


def compute_pairs(
    scores_table: Any, reward: RewardModel, selector: PairSelector, weighting: Weighting
) -> PairsResult:
    """Rewards, pairs and weights for every group of a scores table (nothing written)."""
    metrics = [m.name for m in reward.metrics()]
    groups = scores_by_group(scores_table, metrics)
    if not groups:
        raise Dp2oError("the scores table is empty")
    ordered = sorted(groups)
    all_pairs: list[GroupPairs] = []
    reward_rows: dict[str, list[dict[str, Any]]] = {}
    for group_id in ordered:
        indices, scores = groups[group_id]
        order = sorted(range(len(indices)), key=indices.__getitem__)
        indices = [indices[i] for i in order]
        scores = {name: [values[i] for i in order] for name, values in scores.items()}
        rewards = [float(r) for r in reward.reward(scores)]
        selected = selector.select(rewards)
        all_pairs.append(GroupPairs(group_id, rewards, selected))
        reward_rows[group_id] = [{"candidate": c, "reward": r} for c, r in zip(indices, rewards, strict=True)]
    weights = weighting.weigh(all_pairs)
    pair_rows: dict[str, list[dict[str, Any]]] = {}
    flat_weights, gaps = [], []
    for group, group_weights in zip(all_pairs, weights, strict=True):
        indices = [row["candidate"] for row in reward_rows[group.group_id]]
        rows = []
        for (winner, loser), intra, inter, weight in zip(
            group.pairs, group_weights.intra, group_weights.inter, group_weights.weight, strict=True
        ):
            rows.append(
                {
                    "winner": indices[winner],
                    "loser": indices[loser],
                    "winner_reward": group.rewards[winner],
                    "loser_reward": group.rewards[loser],
                    "intra_weight": float(intra),
                    "inter_weight": float(inter),
                    "weight": float(weight),
                }
            )
            flat_weights.append(float(weight))
            gaps.append(group.rewards[winner] - group.rewards[loser])
        pair_rows[group.group_id] = rows
    if not flat_weights:
        raise Dp2oError("the selector produced no pairs")
    summary = PairsSummary(
        groups=len(all_pairs),
        pairs=len(flat_weights),
        weight_mean=statistics.fmean(flat_weights),
        weight_min=min(flat_weights),
        weight_max=max(flat_weights),
        gap_mean=statistics.fmean(gaps),
        gap_min=min(gaps),
        gap_max=max(gaps),
    )
    return PairsResult(reward_rows, pair_rows, summary)


def per_group_stage(store: Any, path: Any, reward: Any, selector: Any, weighting: Any, config: Any) -> Any:
    """``dp2o pairs RUN --scores FILE`` as it was: the whole file as Python rows, every group's
    rows as dicts, every pair as a dict, written group by group."""
    import pyarrow.parquet as pq

    from dp2o_core.store import ProcessInfo
    from dp2o_core.store.fingerprint import file_signature

    by_group: dict[str, list[dict[str, Any]]] = {}
    for row in pq.read_table(path).to_pylist():
        row = {**row, "group_id": str(row["group_id"]), "candidate": int(row["candidate"])}
        by_group.setdefault(row["group_id"], []).append(row)
    with store.open_stage(
        "score",
        config={"imported": file_signature(path)},
        group_ids=list(by_group),
        process=ProcessInfo(),
        flush_every=4096,
        imported=True,
    ) as writer:
        for group_id in writer.todo:
            writer.add_group(group_id, scores=by_group[group_id])
    del by_group
    result = compute_pairs(store.read_table("score", "scores"), reward, selector, weighting)
    with store.open_stage(
        "pairs", config=config, group_ids=list(result.pairs), process=ProcessInfo(), flush_every=4096
    ) as writer:
        for group_id in writer.todo:
            writer.add_group(group_id, rewards=result.rewards[group_id], pairs=result.pairs[group_id])
    return result.summary
