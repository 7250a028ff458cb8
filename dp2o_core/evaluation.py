"""Evaluation of SR generators as the paper reports it (PAPER.md §8).

For every input, every model draws M candidates from each of K seed sets; the same seeds
serve every model, so a comparison is paired. Each metric is reported as its mean over
inputs and candidates (Mean@M), as mean ± std over the K seed sets. The reward gives
Best@M / Mean@M / Worst@M: per input the best, mean and worst reward of the M candidates,
averaged over inputs. A group-relative reward (the hybrid reward normalises within a group)
is computed over the pool of all models' candidates of one input and seed set, so that the
models' rewards are on one scale and their difference means something.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dp2o_core.interfaces import Backbone, MetricInfo, RewardModel
from dp2o_core.store.fingerprint import derive_seed

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class EvalInput:
    """One evaluation input: LR (1×3×h×w in [0, 1]) and its HR when the data set has one."""

    id: str
    lr: torch.Tensor
    hr: torch.Tensor | None


@dataclass(frozen=True)
class Stat:
    """Mean ± standard deviation over the seed sets (std 0 with one seed set)."""

    mean: float
    std: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """Sample statistics of per-seed-set values."""
        mean = sum(values) / len(values)
        if len(values) < 2:
            return cls(mean, 0.0)
        return cls(mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)))


@dataclass
class ModelEvaluation:
    """What one model scored: each metric's Mean@M, and the reward's Best/Mean/Worst@M."""

    label: str
    spec: str
    metrics: dict[str, Stat] = field(default_factory=dict)
    reward: dict[str, Stat] = field(default_factory=dict)
    #: seed diversity: per-pixel standard deviation over the M samples (RGB in [0, 1]), mean over inputs
    diversity: Stat = field(default_factory=lambda: Stat(0.0, 0.0))
    #: input id → the first candidate of the first seed set (3×H×W), for image grids
    examples: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    """The whole evaluation, as printed by ``dp2o eval`` and stored by ``dp2o train``."""

    models: list[ModelEvaluation]
    metrics: dict[str, MetricInfo]
    unavailable: dict[str, str]
    inputs: list[str]
    num_samples: int
    seeds: int
    reward: str | None

    def to_record(self) -> dict[str, Any]:
        """JSON-ready form (examples left out)."""
        return {
            "inputs": self.inputs,
            "num_samples": self.num_samples,
            "seeds": self.seeds,
            "reward": self.reward,
            "metrics": {
                name: {"mode": info.mode, "lower_better": info.lower_better}
                for name, info in self.metrics.items()
            },
            "unavailable": self.unavailable,
            "models": [
                {
                    "label": m.label,
                    "spec": m.spec,
                    "metrics": {k: vars(v) for k, v in m.metrics.items()},
                    "reward": {k: vars(v) for k, v in m.reward.items()},
                    "diversity": vars(m.diversity),
                }
                for m in self.models
            ],
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Evaluation:
        """Rebuild from :meth:`to_record`'s output (a stored evaluation)."""
        return cls(
            models=[
                ModelEvaluation(
                    m["label"],
                    m["spec"],
                    metrics={k: Stat(**v) for k, v in m["metrics"].items()},
                    reward={k: Stat(**v) for k, v in m["reward"].items()},
                    diversity=Stat(**m["diversity"]),
                )
                for m in record["models"]
            ],
            metrics={
                name: MetricInfo(name, info["mode"], info["lower_better"])
                for name, info in record["metrics"].items()
            },
            unavailable=dict(record.get("unavailable", {})),
            inputs=list(record["inputs"]),
            num_samples=int(record["num_samples"]),
            seeds=int(record["seeds"]),
            reward=record.get("reward"),
        )


REWARD_COLUMNS = ("best", "mean", "worst")


def candidate_seeds(seed: int, seed_set: int, input_id: str, count: int) -> list[int]:
    """The seeds of one input's M candidates in one seed set (the same for every model)."""
    return [derive_seed(seed, "eval", seed_set, input_id, m) % 2**31 for m in range(count)]


def evaluate(
    models: Sequence[tuple[str, str, Backbone]],
    inputs: Sequence[EvalInput],
    scorers: Sequence[RewardModel],
    reward: RewardModel | None,
    *,
    num_samples: int,
    seeds: int = 1,
    seed: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """Sample, score and summarise; ``models`` are (label, spec, backbone) triples.

    ``scorers`` are rewards whose raw metrics are reported (pyiqa metrics); the ``reward``
    gives Best/Mean/Worst@M and its member metrics are reported too. Full-reference metrics
    are skipped (and listed as unavailable) when an input has no HR image.
    """
    import torch

    have_hr = all(item.hr is not None for item in inputs)
    infos: dict[str, MetricInfo] = {}
    unavailable: dict[str, str] = {}
    active_scorers = []
    for scorer in [*scorers, *([reward] if reward is not None else [])]:
        needs_hr = [i.name for i in scorer.metrics() if i.mode == "FR"]
        if needs_hr and not have_hr:
            for name in needs_hr:
                unavailable[name] = "full-reference metric, and the data has no HR images"
            continue
        active_scorers.append(scorer)
        infos.update({info.name: info for info in scorer.metrics()})
    use_reward = reward is not None and reward in active_scorers

    # raw[label][seed_set][input] = {metric: [M values]}
    raw: dict[str, list[list[dict[str, list[float]]]]] = {label: [] for label, _, _ in models}
    spread: dict[str, list[float]] = {label: [] for label, _, _ in models}
    results = {label: ModelEvaluation(label, spec) for label, spec, _ in models}
    for seed_set in range(seeds):
        for label, _, backbone in models:
            per_input, spreads = [], []
            for item in inputs:
                chosen = candidate_seeds(seed, seed_set, item.id, num_samples)
                with torch.no_grad():
                    images = backbone.sample(item.lr, [chosen]).images[0].float().clamp(0, 1)
                if seed_set == 0:
                    results[label].examples[item.id] = images[0]
                spreads.append(float(images.std(dim=0, unbiased=False).mean()))
                scores: dict[str, list[float]] = {}
                for scorer in active_scorers:
                    for name, values in scorer.score(images, item.hr).items():
                        scores.setdefault(name, [float(v) for v in values])
                per_input.append(scores)
                if on_progress is not None:
                    on_progress(1)
            raw[label].append(per_input)
            spread[label].append(_mean(spreads))

    for name in infos:
        for label, _, _ in models:
            per_set = [_mean([v for scores in raw[label][k] for v in scores[name]]) for k in range(seeds)]
            results[label].metrics[name] = Stat.of(per_set)
    for label, _, _ in models:
        results[label].diversity = Stat.of(spread[label])
    if use_reward:
        _reward_stats(reward, models, raw, results, len(inputs), seeds, num_samples)
    return Evaluation(
        models=[results[label] for label, _, _ in models],
        metrics=infos,
        unavailable=unavailable,
        inputs=[item.id for item in inputs],
        num_samples=num_samples,
        seeds=seeds,
        reward=reward.name if use_reward else None,
    )


def _reward_stats(reward, models, raw, results, n_inputs: int, seeds: int, m: int) -> None:
    """Best/Mean/Worst@M of the reward, computed over each input's pool of all models."""
    labels = [label for label, _, _ in models]
    names = [info.name for info in reward.metrics()]
    per_set: dict[str, dict[str, list[float]]] = {label: {c: [] for c in REWARD_COLUMNS} for label in labels}
    for k in range(seeds):
        sums = {label: dict.fromkeys(REWARD_COLUMNS, 0.0) for label in labels}
        for i in range(n_inputs):
            pooled = {name: [v for label in labels for v in raw[label][k][i][name]] for name in names}
            rewards = [float(r) for r in reward.reward(pooled)]
            for index, label in enumerate(labels):
                mine = rewards[index * m : (index + 1) * m]
                sums[label]["best"] += max(mine)
                sums[label]["mean"] += _mean(mine)
                sums[label]["worst"] += min(mine)
        for label in labels:
            for column in REWARD_COLUMNS:
                per_set[label][column].append(sums[label][column] / n_inputs)
    for label in labels:
        results[label].reward = {c: Stat.of(per_set[label][c]) for c in REWARD_COLUMNS}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


class BicubicBaseline:
    """Bicubic ×scale upsampling as a "model" for ``dp2o eval`` (``--compare bicubic``): every
    sample is the same image, the floor a generator has to beat."""

    name = "bicubic"

    def __init__(self, scale: int = 4) -> None:
        self.scale = scale

    def sample(self, lr, seeds, prompts=None):
        """The upsampled LR, repeated once per seed."""
        from dp2o_core.imageio import upsample_bicubic
        from dp2o_core.interfaces import SampleResult

        up = upsample_bicubic(lr, self.scale)
        images = up.unsqueeze(1).expand(-1, len(seeds[0]), -1, -1, -1).contiguous()
        return SampleResult(images=images, seeds=[list(s) for s in seeds])


def load_inputs(dataset, degradation, seed: int) -> list[EvalInput]:
    """A data set's items as evaluation inputs (LR synthesised by ``degradation`` where needed)."""
    from dp2o_core.errors import Dp2oError
    from dp2o_core.imageio import array_to_tensor

    items = dataset.items()
    loaded = dataset.load(items, seed, degradation=degradation)
    inputs = []
    for item, sample in zip(items, loaded, strict=True):
        if isinstance(sample, Exception):
            raise Dp2oError(f"evaluation input {item.id!r}: {sample}")
        hr = None if sample.hr is None else array_to_tensor(sample.hr)
        inputs.append(EvalInput(item.id, array_to_tensor(sample.lr), hr))
    return inputs
