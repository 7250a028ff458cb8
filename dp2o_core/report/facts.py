"""Everything the report shows, read from a run directory (no torch needed)."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from typing import Any

from dp2o_core.stages.eval import read_eval
from dp2o_core.stages.timings import read_timings
from dp2o_core.store import RunStore
from dp2o_core.store.runstore import STAGES


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


@dataclass
class RunFacts:
    """The run's configuration, stage states and timings, tables and curves."""

    root: Any
    config: dict[str, Any]
    stages: list[dict[str, Any]]
    rewards: list[float] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None
    train: dict[str, Any] | None = None

    @property
    def weights(self) -> Distribution | None:
        """Distribution of the final pair weights."""
        return Distribution.of([p["weight"] for p in self.pairs])

    @property
    def gaps(self) -> Distribution | None:
        """Distribution of the winner − loser reward gaps."""
        return Distribution.of([p["winner_reward"] - p["loser_reward"] for p in self.pairs])

    @property
    def reward_distribution(self) -> Distribution | None:
        """Distribution of every candidate's reward."""
        return Distribution.of(self.rewards)

    @property
    def groups_with_pairs(self) -> int:
        """How many groups contributed pairs."""
        return len({p["group_id"] for p in self.pairs})


def gather(store: RunStore) -> RunFacts:
    """Read what exists; stages that have not run leave their parts empty."""
    try:
        config = json.loads((store.root / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    timings = read_timings(store)
    stages = []
    for stage in STAGES:
        status = store.status(stage)
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
        facts.rewards = [float(r) for r in store.read_table("pairs", "rewards").column("reward").to_pylist()]
        facts.pairs = store.read_table("pairs", "pairs").to_pylist()
        facts.pairs.sort(key=lambda r: (r["group_id"], r["winner"], r["loser"]))
    metrics = store.stage_dir("train") / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                facts.history.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a killed process
    facts.train = store.completion("train")
    facts.evaluation = read_eval(store)
    return facts
