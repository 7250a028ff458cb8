"""Everything the report shows, read from a run directory (no torch needed)."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from dp2o_core.evaluation import read_eval
from dp2o_core.stages.timings import read_timings
from dp2o_core.store import RunStore
from dp2o_core.training.checkpoints import read_json_lines


@dataclass
class Distribution:
    """Summary statistics of a list of numbers."""

    count: int
    mean: float
    std: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Distribution | None:
        """None for an empty list."""
        if not values:
            return None
        std = statistics.pstdev(values) if len(values) > 1 else 0.0
        return cls(len(values), statistics.fmean(values), std, min(values), max(values))


class RunningDistribution:
    """A :class:`Distribution` accumulated block by block (Chan's parallel mean/variance)."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self.min, self.max = math.inf, -math.inf

    def add(self, values: Any) -> None:
        """Merge a block of values (a numpy array)."""
        import numpy as np

        values = np.asarray(values, dtype=np.float64)
        if not len(values):
            return
        count, mean = len(values), float(values.mean())
        m2 = float(((values - mean) * (values - mean)).sum())
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total
        self.min, self.max = min(self.min, float(values.min())), max(self.max, float(values.max()))

    def result(self) -> Distribution | None:
        """The summary, None when nothing was added."""
        if not self.count:
            return None
        return Distribution(
            self.count, self.mean, math.sqrt(max(self.m2, 0.0) / self.count), self.min, self.max
        )


@dataclass
class PairFacts:
    """The pairs stage's numbers, read block by block, and evenly spaced samples for charts.

    ``*_sample`` hold every value when there are at most ``limit`` of them, else every
    k-th (``sampled`` says so, and the charts' titles too).
    """

    pairs: int
    groups: int
    rewards: Distribution | None
    gaps: Distribution | None
    weights: Distribution | None
    reward_sample: list[float] = field(default_factory=list)
    winner_sample: list[float] = field(default_factory=list)
    loser_sample: list[float] = field(default_factory=list)
    weight_sample: list[float] = field(default_factory=list)
    gap_sample: list[float] = field(default_factory=list)
    sampled: bool = False


def pair_facts(store: RunStore, limit: int = 50_000) -> PairFacts:
    """Read the pairs stage's rewards and pairs tables in blocks (flat memory at any size)."""
    import numpy as np

    counts = store.status("pairs").rows
    reward_step = max(1, math.ceil(counts.get("rewards", 0) / limit))
    pair_step = max(1, math.ceil(counts.get("pairs", 0) / limit))
    rewards, gaps, weights = RunningDistribution(), RunningDistribution(), RunningDistribution()
    facts = PairFacts(0, 0, None, None, None, sampled=reward_step > 1 or pair_step > 1)
    seen = 0
    for block in store.iter_table_blocks("pairs", "rewards", columns=["reward"]):
        values = block.column("reward").to_numpy()
        rewards.add(values)
        facts.reward_sample.extend(values[(-seen) % reward_step :: reward_step].tolist())
        seen += len(values)
    seen = 0
    columns = ["group_id", "winner", "loser", "winner_reward", "loser_reward", "weight"]
    for block in store.iter_table_blocks("pairs", "pairs", columns=columns):
        weight = block.column("weight").to_numpy()
        gap = block.column("winner_reward").to_numpy() - block.column("loser_reward").to_numpy()
        weights.add(weight)
        gaps.add(gap)
        facts.pairs += len(weight)
        codes = block.column("group_id").combine_chunks().dictionary_encode().indices.to_numpy()
        facts.groups += len(np.unique(codes))
        picks = slice((-seen) % pair_step, None, pair_step)
        facts.weight_sample.extend(weight[picks].tolist())
        facts.gap_sample.extend(gap[picks].tolist())
        for role, sample in (("winner", facts.winner_sample), ("loser", facts.loser_sample)):
            keys = codes.astype(np.int64) * 1_000_000 + block.column(role).to_numpy()
            _, first = np.unique(keys, return_index=True)  # each candidate once per group
            sample.extend(block.column(f"{role}_reward").to_numpy()[np.sort(first)][::pair_step].tolist())
        seen += len(weight)
    facts.rewards, facts.gaps, facts.weights = rewards.result(), gaps.result(), weights.result()
    return facts


@dataclass
class RunFacts:
    """The run's configuration, stage states and timings, pair statistics and curves."""

    root: Any
    config: dict[str, Any]
    stages: list[dict[str, Any]]
    pairs: PairFacts | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    #: one row per round of an iterative run with a held-out evaluation (empty for one round)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    #: ``dp2o pretrain``: its completion record, step metrics, validation records and grid images
    pretrain: dict[str, Any] | None = None
    pretrain_history: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)
    validation_grids: list[str] = field(default_factory=list)


def gather(store: RunStore) -> RunFacts:
    """Read what exists; stages that have not run leave their parts empty."""
    try:
        config = json.loads((store.root / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    timings = read_timings(store)
    stages = []
    for status in store.statuses():  # the optional pretrain stage too, where it ran
        stage = status.stage
        timing = timings.get(stage, {})
        seconds, units = timing.get("seconds"), timing.get("units")
        stages.append(
            {
                "stage": stage,
                "state": status.state,
                "seconds": seconds,
                "units": units,
                "unit": timing.get("unit", ""),
                "throughput": (units / seconds) if units and seconds else None,
            }
        )
    facts = RunFacts(root=store.root, config=config, stages=stages)
    if store.status("pairs").state == "done":
        facts.pairs = pair_facts(store)
    facts.history = read_json_lines(store.stage_dir("train") / "metrics.jsonl")
    facts.train = store.completion("train")
    if store.record("pretrain") is not None:
        _gather_pretrain(store, facts)
    facts.evaluation = read_eval(store)
    facts.rounds = round_rows(store)
    return facts


def _gather_pretrain(store: RunStore, facts: RunFacts) -> None:
    """The pretrain stage's completion, step metrics, validations and their grids."""
    from dp2o_core.stages.pretrain import read_validation

    directory = store.stage_dir("pretrain")
    facts.pretrain = store.completion("pretrain")
    facts.pretrain_history = read_json_lines(directory / "metrics.jsonl")
    facts.validation = read_validation(directory)
    facts.validation_grids = [
        grid.relative_to(store.root).as_posix()
        for grid in sorted((directory / "validation").glob("step-*.png"))
    ]


def round_rows(store: RunStore) -> list[dict[str, Any]]:
    """Per round of an iterative run: the round's model's held-out Best/Mean/Worst@M and each
    one's paired difference to the base model (mean, standard error, Wilcoxon p, inputs better
    / worse); the FR and NR halves' differences. Empty when the run has one round."""
    from dp2o_core.pipeline.rounds import round_evaluations, round_numbers

    if len(round_numbers(store.root)) < 2:
        return []
    rows = []
    for number, evaluation in round_evaluations(store.root):
        if evaluation.reward is None or len(evaluation.models) < 2:
            continue
        model = evaluation.models[-1]
        comparisons = evaluation.comparisons.get(model.label, {})
        row: dict[str, Any] = {"round": number, "num_samples": evaluation.num_samples}
        for key in ("best", "mean", "worst", "FR", "NR"):
            stat = model.reward.get(key)
            comparison = comparisons.get(f"reward.{key}")
            row[key] = stat.mean if stat else None
            row[f"{key}_delta"] = comparison.as_record() if comparison else None
        rows.append(row)
    return rows
