"""The ``pairs`` stage: rewards from raw scores, preference pairs, and their weights.

Runs on the whole data set in one process, because the inter-group weight needs every
group. It streams: the scores are read in blocks of whole groups (:func:`score_blocks`),
and every block's rewards, pairs and weights are computed with the plugins' block methods
(``reward_block``, ``select_block``, ``group_statistics`` / ``weigh_block``: array
operations over all the block's groups) and written as one commit, so memory holds a block,
not the data set. Two passes: the first checks every block and collects what the weighting
needs from every group (μ_σ of hierarchical weighting is over all groups); the second
writes. Nothing is written before the first pass has checked everything, so a bad scores
table leaves the run as it was. A weighting with only the per-group ``weigh`` gets every
group in one call, as before, at the memory cost of holding all pairs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dp2o_core.errors import Dp2oError, short_reason
from dp2o_core.interfaces import GroupPairs, PairSelector, RewardModel, Weighting
from dp2o_core.interfaces.weighting import BlockWeights, PairBlock
from dp2o_core.options import RUNTIME
from dp2o_core.pipeline.context import RunContext, StageRun
from dp2o_core.pipeline.stage import Stage
from dp2o_core.preflight import Check, component_checks
from dp2o_core.specs import Resolved
from dp2o_core.store import ProcessInfo, RunStore
from dp2o_core.store.fingerprint import file_signature

#: Rows of the scores table per block: 500,000 rows (7,800 groups of 64) keep a block's
#: arrays and its pairs (2 M at ratio 1/4) to a few hundred MB.
BLOCK_ROWS = 500_000
#: Pairs per commit of the pairs stage, so that every reader of the table (training, the
#: report, the export) reads it in blocks of this size.
PAIRS_PER_COMMIT = 500_000


@dataclass
class PairsSummary:
    """What ``dp2o pairs`` prints."""

    groups: int
    pairs: int
    weight_mean: float
    weight_min: float
    weight_max: float
    gap_mean: float
    gap_min: float
    gap_max: float
    groups_without_pairs: int = 0


@dataclass
class PairsResult:
    """What the pairs stage did (its tables are in the run)."""

    summary: PairsSummary


@dataclass
class ScoreBlock:
    """Whole groups of the scores table as flat arrays, groups sorted by id and candidates
    by index within each (group g at ``[offsets[g]:offsets[g + 1]]``)."""

    group_ids: list[str]
    offsets: np.ndarray
    candidates: np.ndarray
    scores: dict[str, np.ndarray]


def score_block(table: Any, metrics: Sequence[str]) -> ScoreBlock:
    """Check a block of the scores table (whole groups) and lay it out as a :class:`ScoreBlock`."""
    import pyarrow.compute as pc

    columns = set(table.column_names)
    missing = [name for name in ["group_id", "candidate", *metrics] if name not in columns]
    if missing:
        raise Dp2oError(
            f"the scores table has no column {', '.join(repr(m) for m in missing)} "
            f"(columns: {', '.join(sorted(columns))}); score with a reward that includes "
            f"{'them' if len(missing) > 1 else 'it'} or choose a reward whose metrics are present"
        )
    table = table.select(["group_id", "candidate", *metrics])
    order = pc.sort_indices(table, sort_keys=[("group_id", "ascending"), ("candidate", "ascending")])
    table = table.take(order)
    ids = table.column("group_id").combine_chunks()
    codes = ids.dictionary_encode().indices.to_numpy(zero_copy_only=False)
    rows = len(codes)
    starts: np.ndarray = np.flatnonzero(np.diff(codes) != 0) + 1 if rows else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], starts, [rows]]).astype(np.int64) if rows else np.zeros(1, np.int64)
    group_ids = ids.take(offsets[:-1]).to_pylist() if rows else []
    candidates = table.column("candidate").to_numpy().astype(np.int64)

    def where(row: int) -> str:
        group = int(np.searchsorted(offsets, row, side="right")) - 1
        return f"candidate {candidates[row]} of group {group_ids[group]!r}"

    scores = {}
    for name in metrics:
        column = table.column(name)
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
        nulls: Any = (
            np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False)) if column.null_count else []
        )
        bad = nulls if len(nulls) else np.flatnonzero(~np.isfinite(values))
        if len(bad):
            value = None if len(nulls) else values[bad[0]]
            raise Dp2oError(
                f"the scores table has a {'missing' if value is None else 'non-finite'} {name!r} score "
                f"({value}) for {where(int(bad[0]))}; rescore that group"
            )
        scores[name] = values
    sizes = np.diff(offsets)
    if (sizes < 2).any():
        group = int(np.flatnonzero(sizes < 2)[0])
        raise Dp2oError(
            f"group {group_ids[group]!r} has {sizes[group]} candidate; pairs need at least two per group"
        )
    repeated: np.ndarray = np.flatnonzero(candidates[1:] == candidates[:-1]) + 1
    repeated = repeated[~np.isin(repeated, offsets)]  # equal indices across a group boundary are fine
    if len(repeated):
        group = int(np.searchsorted(offsets, repeated[0], side="right")) - 1
        raise Dp2oError(f"group {group_ids[group]!r} lists a candidate index twice in the scores table")
    return ScoreBlock(group_ids, offsets, candidates, scores)


def score_blocks(
    store: RunStore, metrics: Sequence[str], block_rows: int = BLOCK_ROWS
) -> Iterator[ScoreBlock]:
    """The run's scores table in checked blocks of whole groups (see :func:`score_block`)."""
    for table in store.iter_table_blocks("score", "scores", min_rows=block_rows):
        yield score_block(table, metrics)


@dataclass
class _Totals:
    """Running summary of the written pairs."""

    groups: int = 0
    pairs: int = 0
    empty_groups: int = 0
    weight_sums: list[float] = field(default_factory=list)
    gap_sums: list[float] = field(default_factory=list)
    weight_min: float = math.inf
    weight_max: float = -math.inf
    gap_min: float = math.inf
    gap_max: float = -math.inf

    def add(self, block: PairBlock, weights: BlockWeights) -> None:
        self.groups += len(block.group_ids)
        self.empty_groups += int((np.diff(block.pair_offsets) == 0).sum())
        if len(weights.weight) == 0:
            return
        gaps = block.winner_rewards() - block.loser_rewards()
        self.pairs += len(weights.weight)
        self.weight_sums.append(float(np.sum(weights.weight)))
        self.gap_sums.append(float(np.sum(gaps)))
        self.weight_min = min(self.weight_min, float(weights.weight.min()))
        self.weight_max = max(self.weight_max, float(weights.weight.max()))
        self.gap_min = min(self.gap_min, float(gaps.min()))
        self.gap_max = max(self.gap_max, float(gaps.max()))

    def summary(self) -> PairsSummary:
        return PairsSummary(
            groups=self.groups,
            pairs=self.pairs,
            weight_mean=math.fsum(self.weight_sums) / self.pairs,
            weight_min=self.weight_min,
            weight_max=self.weight_max,
            gap_mean=math.fsum(self.gap_sums) / self.pairs,
            gap_min=self.gap_min,
            gap_max=self.gap_max,
            groups_without_pairs=self.empty_groups,
        )


def pairs_stage_config(resolved: Mapping[str, Resolved]) -> dict[str, Any]:
    """What decides the pairs: the reward (less its runtime options), selector and weighting."""
    return {
        "reward": resolved["reward"].fingerprint_record((RUNTIME,)),
        "selector": resolved["selector"].as_record(),
        "weighting": resolved["weighting"].as_record(),
    }


def make_pairs(
    store: RunStore,
    reward: RewardModel,
    selector: PairSelector,
    weighting: Weighting,
    config: Mapping[str, Any],
    *,
    block_rows: int = BLOCK_ROWS,
) -> PairsResult:
    """The pairs stage: read the run's scores in blocks, check them, then write rewards,
    pairs and weights block by block (module docstring)."""
    metrics = [m.name for m in reward.metrics()]
    vectorised = _overrides(weighting, "group_statistics") and _overrides(weighting, "weigh_block")

    def pair_blocks() -> Iterator[tuple[ScoreBlock, PairBlock]]:
        for block in score_blocks(store, metrics, block_rows):
            rewards = np.asarray(reward.reward_block(block.scores, block.offsets), dtype=np.float64)
            selected = selector.select_block(rewards, block.offsets)
            _check_selection(selector, block, selected)
            yield (
                block,
                PairBlock(
                    group_ids=block.group_ids,
                    positions=np.zeros(0, np.int64),
                    rewards=rewards,
                    offsets=block.offsets,
                    pair_offsets=np.asarray(selected.pair_offsets, np.int64),
                    winners=np.asarray(selected.winners, np.int64),
                    losers=np.asarray(selected.losers, np.int64),
                ),
            )

    # pass 1: check everything, collect the per-group statistics the weighting needs
    ids: list[str] = []
    statistics: list[np.ndarray] = []
    kept: list[tuple[np.ndarray, PairBlock]] = []  # every block, only for a weighting without a block path
    pairs = 0
    for scores, block in pair_blocks():
        ids.extend(block.group_ids)
        pairs += int(block.pair_offsets[-1])
        if vectorised:
            statistics.append(
                np.asarray(weighting.group_statistics(block.rewards, block.offsets), np.float64)
            )
        else:
            kept.append((scores.candidates, block))
    if not ids:
        raise Dp2oError("the scores table is empty")
    if pairs == 0:
        raise Dp2oError("the selector produced no pairs")
    order = sorted(range(len(ids)), key=ids.__getitem__)
    positions: np.ndarray = np.empty(len(ids), dtype=np.int64)
    positions[order] = np.arange(len(ids))
    by_position = np.concatenate(statistics)[order] if vectorised else np.zeros(0)
    blocks: Iterator[tuple[np.ndarray, PairBlock, BlockWeights | None]]
    if vectorised:
        blocks = ((s.candidates, b, None) for s, b in pair_blocks())
    else:
        weighed = _weigh_all_groups(weighting, [b for _, b in kept], order)
        blocks = ((c, b, w) for (c, b), w in zip(kept, weighed, strict=True))

    # pass 2: weigh and write, block by block
    totals = _Totals()
    with store.open_stage(
        "pairs", config=config, group_ids=[ids[i] for i in order], process=ProcessInfo(), flush_every=4096
    ) as writer:
        todo = set(writer.todo)
        first = 0
        for candidates, block, weights in blocks:
            count = len(block.group_ids)
            block = replace(block, positions=positions[first : first + count])
            first += count
            if weights is None:
                weights = weighting.weigh_block(block, by_position)
            totals.add(block, weights)
            _write_block(writer, block, weights, candidates, todo)
    return PairsResult(totals.summary())


def _overrides(weighting: Weighting, method: str) -> bool:
    return getattr(type(weighting), method) is not getattr(Weighting, method)


def _check_selection(selector: PairSelector, block: ScoreBlock, selected: Any) -> None:
    pair_offsets = np.asarray(selected.pair_offsets)
    if pair_offsets.shape != (len(block.group_ids) + 1,) or pair_offsets[-1] != len(selected.winners):
        raise Dp2oError(f"selector {selector.name!r} returned pair offsets that do not match its groups")
    sizes: np.ndarray = np.repeat(np.diff(block.offsets), np.diff(pair_offsets))
    for name, positions in (("winner", selected.winners), ("loser", selected.losers)):
        positions = np.asarray(positions)
        if len(positions) and ((positions < 0) | (positions >= sizes)).any():
            raise Dp2oError(f"selector {selector.name!r} returned a {name} index outside its group")


def _weigh_all_groups(weighting: Weighting, blocks: list[PairBlock], order: list[int]) -> list[BlockWeights]:
    """The per-group path: ``weigh`` once over every group (in id order); the weights of
    each block, in block order."""
    groups: list[GroupPairs] = []
    for block in blocks:
        for g, group_id in enumerate(block.group_ids):
            start, end = block.offsets[g], block.offsets[g + 1]
            p0, p1 = block.pair_offsets[g], block.pair_offsets[g + 1]
            groups.append(
                GroupPairs(
                    group_id,
                    block.rewards[start:end].tolist(),
                    list(zip(block.winners[p0:p1].tolist(), block.losers[p0:p1].tolist(), strict=True)),
                )
            )
    by_group = dict(zip(order, weighting.weigh([groups[i] for i in order]), strict=True))
    result, first = [], 0
    for block in blocks:
        mine = [by_group[i] for i in range(first, first + len(block.group_ids))]
        first += len(block.group_ids)
        result.append(
            BlockWeights(
                *(
                    np.asarray([x for w in mine for x in getattr(w, key)], np.float64)
                    for key in ("intra", "inter", "weight")
                )
            )
        )
    return result


def _write_block(
    writer: Any, block: PairBlock, weights: BlockWeights, candidates: np.ndarray, todo: set[str]
) -> None:
    """One commit with the block's rewards and pairs tables (groups not yet committed only)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    sizes, counts = np.diff(block.offsets), np.diff(block.pair_offsets)
    ids = pa.array(block.group_ids, pa.string())
    base: np.ndarray = np.repeat(block.offsets[:-1], counts)
    rewards = pa.table(
        {
            "group_id": ids.take(np.repeat(np.arange(len(sizes)), sizes)),
            "candidate": candidates,
            "reward": block.rewards,
        }
    )
    pairs = pa.table(
        {
            "group_id": ids.take(np.repeat(np.arange(len(counts)), counts)),
            "winner": candidates[base + block.winners],
            "loser": candidates[base + block.losers],
            "winner_reward": block.rewards[base + block.winners],
            "loser_reward": block.rewards[base + block.losers],
            "intra_weight": np.asarray(weights.intra, np.float64),
            "inter_weight": np.asarray(weights.inter, np.float64),
            "weight": np.asarray(weights.weight, np.float64),
        }
    )
    # commits of at most PAIRS_PER_COMMIT pairs (whole groups), so readers' blocks stay small
    first = 0
    while first < len(counts):
        last = max(
            first + 1,
            int(np.searchsorted(block.pair_offsets, block.pair_offsets[first] + PAIRS_PER_COMMIT, "right"))
            - 1,
        )
        last = min(last, len(counts))
        c0, c1 = int(block.offsets[first]), int(block.offsets[last])
        p0, p1 = int(block.pair_offsets[first]), int(block.pair_offsets[last])
        part_rewards, part_pairs = rewards.slice(c0, c1 - c0), pairs.slice(p0, p1 - p0)
        groups = [g for g in block.group_ids[first:last] if g in todo]
        if len(groups) != last - first:  # resuming: some of these groups are committed
            keep = pa.array(groups, pa.string())
            part_rewards = part_rewards.filter(pc.is_in(part_rewards.column("group_id"), keep))
            part_pairs = part_pairs.filter(pc.is_in(part_pairs.column("group_id"), keep))
        writer.add_block(groups, rewards=part_rewards, pairs=part_pairs)
        first = last


def import_scores(store: RunStore, path: Path, *, rows_per_part: int = BLOCK_ROWS) -> None:
    """Make a scores table written by another tool (parquet or CSV) the run's ``score`` stage.

    It needs ``group_id``, ``candidate`` and one numeric column per metric; the stage records
    the file's path, size and time, so importing a changed file redoes the later stages. The
    file is streamed in two passes with flat memory, whatever its size and however its rows
    are ordered: rows are first spread over temporary bucket files by a hash of the group id
    (so each group lands whole in one bucket), then each bucket is checked as the pairs stage
    checks scores (finite values, two or more candidates per group, no candidate twice) and
    against the run's candidates (known groups, indices 0…M−1) and becomes one commit.

    The commits go to a staging folder; only a table that passed every check replaces the
    run's score stage, so a rejected import leaves the run's own scores as they were.
    """
    import shutil

    path = Path(path)
    batches, total_rows = _scores_batches(path)
    buckets = max(1, math.ceil(total_rows / max(1, rows_per_part)))
    work = store.root / f".import-scores-{time.time_ns()}"
    try:
        group_ids, schema = _spread_over_buckets(path, batches, buckets, work)
        metrics = [name for name in schema.names if name not in ("group_id", "candidate")]
        if not metrics:
            raise Dp2oError(f"scores table {path} has no metric columns besides group_id and candidate")
        candidates = _run_candidates(store)
        staging = RunStore(work / "run")
        with staging.open_stage(
            "score",
            config={"imported": file_signature(path)},
            group_ids=sorted(group_ids),
            process=ProcessInfo(),
            imported=True,
        ) as writer:
            for bucket in range(buckets):
                bucket_file = work / f"bucket-{bucket:05d}.parquet"
                table = _checked_bucket(path, bucket_file, schema, metrics, candidates)
                if table is not None:
                    groups = sorted(set(table.column("group_id").to_pylist()))
                    writer.add_block(groups, scores=table)
        store.replace_stage("score", staging)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_candidates(store: RunStore) -> tuple[dict[str, int], int] | None:
    """(group → candidates sampled, M) of the run's finished sample stage, or None when the run
    has none (a scores table of candidates made elsewhere)."""
    if store.status("sample").state != "done":
        return None
    import pyarrow.compute as pc

    table = store.read_table("sample", "candidates", columns=["group_id"])
    counts = pc.value_counts(table.column("group_id")).to_pylist()
    per_group = {row["values"]: int(row["counts"]) for row in counts}
    count = int((store.record("sample") or {}).get("config", {}).get("num_candidates") or 0)
    return per_group, count or max(per_group.values(), default=0)


def _checked_bucket(
    path: Path, bucket: Path, schema: Any, metrics: list[str], candidates: tuple[dict[str, int], int] | None
) -> Any:
    """One bucket's rows (whole groups, sorted by group), checked; None for an empty bucket."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not bucket.exists():
        return None
    table = pq.read_table(bucket, schema=schema)
    table = table.take(pc.sort_indices(table, sort_keys=[("group_id", "ascending")]))
    try:
        block = score_block(table, metrics)
    except Dp2oError as error:
        raise Dp2oError(f"scores table {path} rejected (the run is unchanged): {error}") from None
    negative = np.flatnonzero(block.candidates < 0)
    if len(negative):
        raise Dp2oError(
            f"scores table {path}: candidate index {block.candidates[negative[0]]} of group "
            f"{_group_of(block, int(negative[0]))!r} is negative; candidates are numbered from 0"
        )
    if candidates is not None:
        per_group, count = candidates
        unknown = [g for g in block.group_ids if g not in per_group]
        if unknown:
            raise Dp2oError(
                f"scores table {path} scores group {unknown[0]!r}"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                + ", which the run did not sample; import scores of this run's candidates "
                "(its sample stage lists them)"
            )
        limits: np.ndarray = np.repeat(
            np.array([per_group[g] for g in block.group_ids]), np.diff(block.offsets)
        )
        beyond = np.flatnonzero(block.candidates >= limits)
        if len(beyond):
            row = int(beyond[0])
            raise Dp2oError(
                f"scores table {path}: group {_group_of(block, row)!r} has no candidate "
                f"{block.candidates[row]} (the run sampled {int(limits[row])} per group, numbered "
                f"0–{int(limits[row]) - 1}; M = {count})"
            )
    return table


def _group_of(block: ScoreBlock, row: int) -> str:
    return block.group_ids[int(np.searchsorted(block.offsets, row, side="right")) - 1]


def _scores_batches(path: Path) -> tuple[Iterator[Any], int]:
    """Record batches of a parquet or CSV scores table, and its row count (estimated for CSV)."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() == ".csv":
            reader = pyarrow.csv.open_csv(
                path,
                read_options=pyarrow.csv.ReadOptions(block_size=16 << 20),
                convert_options=pyarrow.csv.ConvertOptions(column_types={"group_id": pa.string()}),
            )
            estimate = max(1, path.stat().st_size // 64)  # ~64 bytes a row of nine metrics
            return iter(reader), estimate
        parquet = pq.ParquetFile(path)
        return parquet.iter_batches(batch_size=262_144), parquet.metadata.num_rows
    except (OSError, ValueError, pa.ArrowException) as error:
        raise Dp2oError(f"cannot read scores table {path}: {error}") from None


def _spread_over_buckets(
    path: Path, batches: Iterator[Any], buckets: int, work: Path
) -> tuple[set[str], Any]:
    """Pass 1 of the import: every row into the bucket file of its group; the group ids."""
    import zlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    work.mkdir(parents=True)
    writers: dict[int, Any] = {}
    group_ids: set[str] = set()
    schema = None
    try:
        for batch in batches:
            table = pa.Table.from_batches([batch])
            for column in ("group_id", "candidate"):
                if column not in table.column_names:
                    found = ", ".join(table.column_names)
                    raise Dp2oError(f"scores table {path} has no {column!r} column (columns: {found})")
            for name in table.column_names:
                kind = {"group_id": pa.string(), "candidate": pa.int64()}.get(name, pa.float64())
                table = _cast_column(path, table, name, kind)
            if schema is None:
                schema = table.schema
            table = table.cast(schema)
            encoded = table.column("group_id").combine_chunks().dictionary_encode()
            names = encoded.dictionary.to_pylist()
            group_ids.update(names)
            bucket_of_name = np.array(
                [zlib.crc32(n.encode("utf-8")) % buckets for n in names], dtype=np.int64
            )
            rows_bucket = bucket_of_name[encoded.indices.to_numpy(zero_copy_only=False)]
            for bucket in np.unique(rows_bucket):
                part = table.filter(pa.array(rows_bucket == bucket))
                if bucket not in writers:
                    writers[int(bucket)] = pq.ParquetWriter(
                        work / f"bucket-{int(bucket):05d}.parquet", schema
                    )
                writers[int(bucket)].write_table(part)
    except (OSError, ValueError, pa.ArrowException) as error:
        raise Dp2oError(f"cannot read scores table {path}: {error}") from None
    finally:
        for writer in writers.values():
            writer.close()
    if schema is None:
        raise Dp2oError(f"scores table {path} has no rows")
    return group_ids, schema


def _cast_column(path: Path, table: Any, name: str, kind: Any) -> Any:
    """``table`` with column ``name`` cast to ``kind``, or an error naming the column and a value
    that is not of that kind (a metric score ``abc``, a candidate index ``1.5``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    index = table.column_names.index(name)
    try:
        return table.set_column(index, name, pc.cast(table.column(name), kind))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        what = "text" if kind == pa.string() else "an integer" if kind == pa.int64() else "a number"
        raise Dp2oError(
            f"scores table {path}: column {name!r} must hold {what} in every row ({short_reason(error)})"
        ) from None


class PairsStage(Stage):
    """Rewards, preference pairs and their weights from the scores (process 0 alone: the
    inter-group weight needs every group)."""

    name = "pairs"
    unit = "pairs"
    main_only = True

    def components(self, ctx: RunContext) -> tuple[str, ...]:
        return ("reward", "selector", "weighting")

    def config(self, ctx: RunContext) -> dict[str, Any]:
        return pairs_stage_config({key: ctx.component(key) for key in self.components(ctx)})

    def checks(self, ctx: RunContext) -> list[Check]:
        # the reward only recombines stored scores here: its metrics' weights are not needed
        return [check for key in ("selector", "weighting") for check in component_checks(ctx.component(key))]

    def run(self, ctx: RunContext, config: dict[str, Any]) -> StageRun:
        result = make_pairs(
            ctx.store, ctx.build("reward"), ctx.build("selector"), ctx.build("weighting"), config
        )
        s = result.summary
        note = (
            f"{s.pairs} pairs from {s.groups} groups; weight mean {s.weight_mean:.3f} "
            f"(min {s.weight_min:.3f}, max {s.weight_max:.3f}); reward gap mean {s.gap_mean:.3f}"
        )
        if s.groups_without_pairs:
            note += f"; {s.groups_without_pairs} groups without pairs (the selector chose none)"
        return StageRun(units=s.pairs, result=result, note=note)
