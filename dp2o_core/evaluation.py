"""Evaluation of SR generators as the paper reports it (docs/evaluation.md), in one module.

For every input, every model draws M candidates from each of K seed sets; the same seeds
serve every model, so a comparison is paired. Every raw score lands in one flat
:class:`ScoreTable` (model, seed set, input, candidate, metric, value). Each metric is
reported as its mean over inputs and candidates (Mean@M), as mean ± std over the K seed
sets. The reward gives Best@M / Mean@M / Worst@M: per input the best, mean and worst reward
of the M candidates, averaged over inputs. A group-relative reward (the hybrid reward
normalises within a group) is computed over the pool of all models' candidates of one input
and seed set, so that the models' rewards are on one scale and their difference means
something.

The module holds the whole evaluation: the inputs (:func:`load_inputs`), the models
(:class:`EvalModel`, :class:`BicubicBaseline`), the metrics (:func:`metric_names`,
:func:`build_scorers`), the computation (:func:`evaluate`) and the ``eval`` stage's stored
record (:func:`write_evaluation`, :func:`read_eval`). ``dp2o eval`` and ``dp2o train``'s
held-out stage both go through it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from dp2o_core.eval_stats import PairedComparison, sample_std
from dp2o_core.interfaces import Backbone, MetricInfo, RewardModel
from dp2o_core.store.fingerprint import derive_seed

if TYPE_CHECKING:
    import torch

    from dp2o_core.registry import PluginManager
    from dp2o_core.store import RunStore

#: The paper's fourteen evaluation metrics: trained FR, trained NR, untrained NR (VQ-R1 is dp2o's
#: ``vqr1`` reward, the rest pyiqa's), fidelity.
PAPER_METRICS = (
    "lpips", "topiq_fr", "afine_fr", "maniqa", "musiq", "clipiqa+", "topiq_nr", "afine_nr", "qalign",
    "vqr1", "nima", "topiq_iaa", "psnry", "ssim",
)  # fmt: skip
#: Y-channel PSNR and SSIM (the Real-ISR protocol): pyiqa's ``psnry`` and ``ssim``.
FIDELITY_METRICS = ("psnry", "ssim")
#: The names ``--metrics`` expands to a set of metrics.
METRIC_SETS = {"paper": PAPER_METRICS, "fidelity": FIDELITY_METRICS}
#: Where the stored evaluation of a run's ``eval`` stage lives, inside the stage folder.
RESULT_FILE = "held-out.json"


@dataclass(frozen=True)
class EvalInput:
    """One evaluation input: LR (1×3×h×w in [0, 1]), its HR when the data set has one, and the
    prompt it is sampled with (the ``--prompter``'s, or the data set's own)."""

    id: str
    lr: torch.Tensor
    hr: torch.Tensor | None
    prompt: str | None = None


class EvalModel(NamedTuple):
    """One evaluated model: its label in tables, the spec it was built from, the backbone
    (anything with the :meth:`Backbone.sample` call)."""

    label: str
    spec: str
    backbone: Backbone | BicubicBaseline


@dataclass
class ScoreTable:
    """Every raw score of an evaluation: one row per model, seed set, input, candidate and
    metric. Stored by key for fast lookup; :meth:`rows` gives the flat table."""

    _values: dict[tuple[str, int, str, str], list[float]] = field(default_factory=dict)

    def add(self, model: str, seed_set: int, input_id: str, metric: str, values: Sequence[float]) -> None:
        """The M candidates' scores of one metric (the first scorer that reports it wins)."""
        self._values.setdefault((model, seed_set, input_id, metric), [float(v) for v in values])

    def get(self, model: str, seed_set: int, input_id: str, metric: str) -> list[float]:
        """The M candidates' scores of one metric for one model, seed set and input."""
        return self._values[(model, seed_set, input_id, metric)]

    def rows(self) -> Iterator[dict[str, Any]]:
        """The flat table: model, seed_set, input, candidate, metric, value."""
        for (model, seed_set, input_id, metric), values in self._values.items():
            for candidate, value in enumerate(values):
                yield {
                    "model": model,
                    "seed_set": seed_set,
                    "input": input_id,
                    "candidate": candidate,
                    "metric": metric,
                    "value": value,
                }


@dataclass(frozen=True)
class Stat:
    """Mean ± standard deviation over the seed sets (std 0 with one seed set)."""

    mean: float
    std: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """Sample statistics of per-seed-set values."""
        return cls(sum(values) / len(values), sample_std(values))


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
    #: the named parts of the reward (the hybrid reward's FR and NR halves), each reported as Mean@M
    reward_parts: list[str] = field(default_factory=list)
    #: model label → quantity key (:meth:`quantities`) → one value per input (mean over seed sets)
    per_input: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: model label (every model but the first) → quantity key → the paired comparison with the first
    comparisons: dict[str, dict[str, PairedComparison]] = field(default_factory=dict)
    #: every raw score (not part of the stored record)
    scores: ScoreTable = field(default_factory=ScoreTable)

    def quantities(self) -> list[tuple[str, str]]:
        """(key, label) of everything reported per model, in table order: each metric, the
        seed diversity, the reward's Best/Mean/Worst@M and its parts' Mean@M."""
        m = self.num_samples
        rows = [
            (name, f"{LABELS.get(name, name)} {'↓' if info.lower_better else '↑'}")
            for name, info in self.metrics.items()
        ]
        rows.append((DIVERSITY, "seed diversity (pixel std) ↑"))
        if self.reward is not None:
            rows += [(REWARD_PREFIX + c, f"{self.reward} {c.capitalize()}@{m} ↑") for c in REWARD_COLUMNS]
            rows += [
                (REWARD_PREFIX + part, f"{self.reward} {part} half Mean@{m} ↑") for part in self.reward_parts
            ]
        return rows

    def lower_better(self, key: str) -> bool:
        """Whether a smaller value of quantity ``key`` is better (only metrics say so)."""
        info = self.metrics.get(key)
        return info is not None and info.lower_better

    def stat(self, model: ModelEvaluation, key: str) -> Stat:
        """Model ``model``'s mean ± std over seed sets of quantity ``key``."""
        if key == DIVERSITY:
            return model.diversity
        if key.startswith(REWARD_PREFIX):
            return model.reward[key.removeprefix(REWARD_PREFIX)]
        return model.metrics[key]

    def per_input_rows(self) -> list[dict[str, Any]]:
        """The per-input table: one row per input and model, one column per quantity."""
        keys = [key for key, _ in self.quantities()]
        return [
            {"input": input_id, "model": model.label}
            | {
                key: self.per_input[model.label][key][index]
                for key in keys
                if key in self.per_input[model.label]
            }
            for index, input_id in enumerate(self.inputs)
            for model in self.models
        ]

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
            "reward_parts": self.reward_parts,
            "per_input": self.per_input,
            "comparisons": {
                label: {key: c.as_record() for key, c in quantities.items()}
                for label, quantities in self.comparisons.items()
            },
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
            reward_parts=list(record.get("reward_parts", [])),
            per_input={k: dict(v) for k, v in record.get("per_input", {}).items()},
            comparisons={
                label: {key: PairedComparison.from_record(c) for key, c in quantities.items()}
                for label, quantities in record.get("comparisons", {}).items()
            },
        )


REWARD_COLUMNS = ("best", "mean", "worst")
#: Quantity keys: a metric's name, this for the seed diversity, and this prefix + a reward
#: column (``reward.mean``) or a part of the reward (``reward.FR``).
DIVERSITY = "diversity"
REWARD_PREFIX = "reward."
#: How metrics are labelled in tables where the pyiqa name is not what readers know.
LABELS = {"psnry": "PSNR-Y", "ssim": "SSIM-Y"}


def candidate_seeds(seed: int, seed_set: int, input_id: str, count: int) -> list[int]:
    """The seeds of one input's M candidates in one seed set (the same for every model)."""
    return [derive_seed(seed, "eval", seed_set, input_id, m) % 2**31 for m in range(count)]


def evaluate(
    models: Sequence[EvalModel | tuple[str, str, Any]],
    inputs: Sequence[EvalInput],
    scorers: Sequence[RewardModel],
    reward: RewardModel | None,
    *,
    num_samples: int,
    seeds: int = 1,
    seed: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """Sample, score and summarise ``models`` on ``inputs``.

    ``scorers`` are rewards whose raw metrics are reported (pyiqa metrics); the ``reward``
    gives Best/Mean/Worst@M and its member metrics are reported too. Full-reference metrics
    are skipped (and listed as unavailable) when an input has no HR image.
    """

    entries = [EvalModel(*model) for model in models]
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

    table = ScoreTable()
    input_ids = [item.id for item in inputs]
    # per model, quantity and seed set: one value per input (the statistics' unit)
    values: dict[str, dict[str, list[list[float]]]] = {model.label: {} for model in entries}
    results = {model.label: ModelEvaluation(model.label, model.spec) for model in entries}
    for seed_set in range(seeds):
        for model in entries:
            spreads = []
            for item, images in _sampled(model.backbone, inputs, num_samples, seed, seed_set):
                if seed_set == 0:
                    results[model.label].examples[item.id] = images[0]
                spreads.append(float(images.std(dim=0, unbiased=False).mean()))
                for scorer in active_scorers:
                    for name, scored in scorer.score(images, item.hr).items():
                        table.add(model.label, seed_set, item.id, name, scored)
                if on_progress is not None:
                    on_progress(1)
            values[model.label].setdefault(DIVERSITY, []).append(spreads)

    for name in infos:
        for model in entries:
            values[model.label][name] = [
                [_mean(table.get(model.label, k, i, name)) for i in input_ids] for k in range(seeds)
            ]
    parts: list[str] = []
    if use_reward:
        assert reward is not None
        parts = _reward_values(
            reward, [m.label for m in entries], table, values, input_ids, seeds, num_samples
        )
    for model in entries:
        result = results[model.label]
        for key, per_set in values[model.label].items():
            stat = Stat.of([_mean(per_input) for per_input in per_set])
            if key == DIVERSITY:
                result.diversity = stat
            elif key.startswith(REWARD_PREFIX):
                result.reward[key.removeprefix(REWARD_PREFIX)] = stat
            else:
                result.metrics[key] = stat
    per_input = {
        label: {
            key: [_mean(column) for column in zip(*per_set, strict=True)]
            for key, per_set in quantities.items()
        }
        for label, quantities in values.items()
    }
    evaluation = Evaluation(
        models=[results[model.label] for model in entries],
        metrics=infos,
        unavailable=unavailable,
        inputs=input_ids,
        num_samples=num_samples,
        seeds=seeds,
        reward=reward.name if use_reward and reward is not None else None,
        reward_parts=parts,
        per_input=per_input,
        scores=table,
    )
    evaluation.comparisons = compare_to_base(evaluation)
    return evaluation


def compare_to_base(evaluation: Evaluation) -> dict[str, dict[str, PairedComparison]]:
    """Every model after the first against the first (the base), quantity by quantity, over
    the inputs (:mod:`dp2o_core.eval_stats`)."""
    if not evaluation.models or not evaluation.per_input:
        return {}
    base = evaluation.models[0].label
    comparisons: dict[str, dict[str, PairedComparison]] = {}
    for model in evaluation.models[1:]:
        comparisons[model.label] = {
            key: PairedComparison.of(
                evaluation.per_input[base][key], values, lower_better=evaluation.lower_better(key)
            )
            for key, values in evaluation.per_input[model.label].items()
        }
    return comparisons


def _reward_values(
    reward: RewardModel,
    labels: list[str],
    table: ScoreTable,
    values: dict[str, dict[str, list[list[float]]]],
    input_ids: list[str],
    seeds: int,
    m: int,
) -> list[str]:
    """Per input and seed set, each model's Best/Mean/Worst@M of the reward and Mean@M of
    each of its parts, computed over the input's pool of all models' candidates (a
    group-relative reward puts every model on one scale); returns the parts' names."""
    names = [info.name for info in reward.metrics()]
    parts: list[str] = []
    for k in range(seeds):
        columns: dict[str, dict[str, list[float]]] = {label: {} for label in labels}
        for input_id in input_ids:
            pooled = {
                name: [v for label in labels for v in table.get(label, k, input_id, name)] for name in names
            }
            rewards = [float(r) for r in reward.reward(pooled)]
            pieces = {part: [float(v) for v in got] for part, got in reward.reward_parts(pooled).items()}
            parts = list(pieces)
            for index, label in enumerate(labels):
                mine = rewards[index * m : (index + 1) * m]
                found = {"best": max(mine), "mean": _mean(mine), "worst": min(mine)}
                found |= {part: _mean(got[index * m : (index + 1) * m]) for part, got in pieces.items()}
                for column, value in found.items():
                    columns[label].setdefault(column, []).append(value)
        for label in labels:
            for column, per_input in columns[label].items():
                values[label].setdefault(REWARD_PREFIX + column, []).append(per_input)
    return parts


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


def _sampled(backbone, inputs: Sequence[EvalInput], num_samples: int, seed: int, seed_set: int):
    """``(input, its num_samples images in [0, 1])`` in input order, inputs of one LR size packed
    into one sampling call as the sample stage packs groups (``groups_per_call``): with M
    below the backbone's batch, several inputs share a batch."""
    import torch

    from dp2o_core.stages.sample import same_size_batches

    groups_per_call = getattr(backbone, "groups_per_call", None)
    per_call = max(1, groups_per_call(num_samples)) if groups_per_call else 1
    for batch in same_size_batches(inputs, per_call, lambda item: item.lr):
        chosen = [candidate_seeds(seed, seed_set, item.id, num_samples) for item, _ in batch]
        with torch.no_grad():
            prompts = [item.prompt or "" for item, _ in batch]
            result = backbone.sample(torch.cat([lr for _, lr in batch]), chosen, prompts).images
        for row, (item, _) in enumerate(batch):
            yield item, result[row].float().clamp(0, 1)


def load_inputs(dataset, degradation, seed: int, prompter=None) -> list[EvalInput]:
    """A data set's items as evaluation inputs (LR synthesised by ``degradation`` where needed),
    each with its prompt (``prompter``'s, else the data set's own)."""
    from dp2o_core.errors import Dp2oError
    from dp2o_core.imageio import BadImageError, array_to_tensor
    from dp2o_core.interfaces.prompter import sample_prompts

    items = dataset.items()
    loaded = dataset.load(items, seed, degradation=degradation)
    samples = []
    for item, sample in zip(items, loaded, strict=True):
        if isinstance(sample, BadImageError):  # evaluation has no --on-bad-image: every input counts
            raise Dp2oError(f"evaluation input {item.id!r}: {sample.unskippable()}")
        if isinstance(sample, Exception):
            raise Dp2oError(f"evaluation input {item.id!r}: {sample}")
        samples.append(sample)
    inputs = []
    for sample, prompt in zip(samples, sample_prompts(prompter, samples), strict=True):
        hr = None if sample.hr is None else array_to_tensor(sample.hr)
        inputs.append(EvalInput(sample.item.id, array_to_tensor(sample.lr), hr, prompt))
    return inputs


# -- metrics ----------------------------------------------------------------------------------
def metric_names(text: str | Sequence[str]) -> list[str]:
    """Metric names from a comma-separated list (or a list); ``paper`` and ``fidelity`` expand
    to :data:`PAPER_METRICS` and :data:`FIDELITY_METRICS`; duplicates are dropped."""
    return list(metric_specs(text))


def metric_specs(text: str | Sequence[str]) -> dict[str, str]:
    """Metric name → the spec it is built from, from a comma-separated list (or a list).

    A name may carry options as a plugin spec does — ``vqr1:model=/models/VQ-R1,thinking=false``:
    a part with ``=`` and no ``:`` is the previous metric's next option. ``paper`` and
    ``fidelity`` expand to their :data:`METRIC_SETS`; a name given again keeps its place, and its
    options when it has some (``paper,vqr1:model=…``); ``-NAME`` leaves a metric (or a set) out
    (``paper,-vqr1,-qalign``: the paper's set without its two 7 B models)."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    specs: dict[str, str] = {}
    last = None
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if part.startswith("-"):
            for left_out in METRIC_SETS.get(part[1:], (part[1:],)):
                specs.pop(left_out, None)
            last = None
            continue
        if last is not None and "=" in part and ":" not in part.partition("=")[0]:
            specs[last] += f",{part}"
            continue
        name = part.partition(":")[0].strip()
        for expanded in METRIC_SETS.get(name, (name,)):
            if expanded not in specs or (expanded == name and ":" in part):
                specs[expanded] = part if expanded == name else expanded
        last = name if name in specs else None
    return specs


def build_scorers(
    manager: PluginManager, names: Sequence[str], exclude: Sequence[str] = ()
) -> tuple[list[RewardModel], dict[str, str]]:
    """A prepared reward per metric (:func:`metric_specs`; not in ``exclude``), and name → reason
    for the metrics that cannot run (missing weights, missing package). A name is a registered
    reward that scores images itself (``vqr1``), else a pyiqa metric (its options: the pyiqa
    reward's, ``lpips:device=cpu``)."""
    from dp2o_core.specs import parse_spec, resolve_spec

    scorers: list[RewardModel] = []
    unavailable: dict[str, str] = {}
    for name, given in metric_specs(names).items():
        if name in exclude:
            continue
        options = given.partition(":")[2]
        if _scoring_reward(manager, name):
            spec = given
        else:
            spec = f"pyiqa:metric={name}" + (f",{options}" if options else "")
        resolved = resolve_spec(manager, "reward", parse_spec(spec, "reward"), None)
        missing = [c for c in resolved.registration.cls.readiness(resolved.options) if not c.ok]
        if missing:  # named without loading anything (a missing file, a metric that cannot run here)
            unavailable[name] = "; ".join(f"{check.item}: {check.problem}" for check in missing)
            continue
        scorer = resolved.build()
        try:
            scorer.prepare()
        except Exception as error:  # noqa: BLE001 - any metric that cannot be created is listed
            unavailable[name] = unavailable_reason(error)
            continue
        scorers.append(scorer)
    return scorers, unavailable


def _scoring_reward(manager: PluginManager, name: str) -> bool:
    """Whether ``name`` is a registered reward, other than ``pyiqa`` itself, that scores images
    (a composite such as ``hybrid`` leaves scoring to its members and is no metric)."""
    registration = manager.implementations("reward").get(name)
    if registration is None or registration.name == "pyiqa":
        return False
    return getattr(registration.cls, "score", None) is not RewardModel.score


def prepared_reward(reward: RewardModel, unavailable: dict[str, str]) -> RewardModel | None:
    """``reward`` prepared, or None with the reason added to ``unavailable`` when it cannot run."""
    try:
        reward.prepare()
    except Exception as error:  # noqa: BLE001 - a reward that cannot run is reported, not fatal
        unavailable[f"reward {reward.name}"] = unavailable_reason(error)
        return None
    return reward


def unavailable_reason(error: BaseException) -> str:
    """The first line of why a metric cannot run, with the install command for a missing package."""
    if isinstance(error, ModuleNotFoundError):
        return f"needs the Python package {error.name!r}: pip install {error.name}"
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def compared_backbone(manager: PluginManager, spec: str) -> Any:
    """The resolved backbone of a ``--compare`` spec (its readiness can be checked before anything
    loads); None for ``bicubic``, the plain-upsampling baseline."""
    from dp2o_core.specs import parse_spec, resolve_spec

    parsed = parse_spec(spec, "backbone")
    if parsed.name == "bicubic" and not parsed.options:
        return None
    return resolve_spec(manager, "backbone", parsed, None)


def compared_model(manager: PluginManager, spec: str, label: str = "compared", scale: int = 4) -> EvalModel:
    """A model from a backbone spec; ``bicubic`` is the plain-upsampling baseline (×``scale``,
    the base model's)."""
    resolved = compared_backbone(manager, spec)
    return EvalModel(label, spec, BicubicBaseline(scale) if resolved is None else resolved.build())


def ensure_sizes_fit(inputs: Sequence[EvalInput], models: Sequence[EvalModel]) -> None:
    """Stop with :class:`~dp2o_core.errors.UsageError` (before any sampling) when a model's
    outputs would not have the HR images' size."""
    from dp2o_core.errors import UsageError

    for model in models:
        scale = model.backbone.scale
        for item in inputs:
            out = (item.lr.shape[-2] * scale, item.lr.shape[-1] * scale)
            if item.hr is not None and out != tuple(item.hr.shape[-2:]):
                raise UsageError(
                    f"{model.label} ({model.spec}) makes {out[1]}×{out[0]} images of the "
                    f"{item.lr.shape[-1]}×{item.lr.shape[-2]} input {item.id!r}, whose HR is "
                    f"{item.hr.shape[-1]}×{item.hr.shape[-2]}: give the data scale={scale}, or a "
                    "backbone that upscales by the data's scale (upscale=1 for LR images registered "
                    "at the HR's size)"
                )


# -- the eval stage's record --------------------------------------------------------------------
def eval_stage_config(records: Mapping[str, Any], settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """What decides a run's held-out evaluation besides the trained weights."""
    return {**records, "eval": dict(settings), "seed": seed}


def write_evaluation(
    store: RunStore, evaluation: Evaluation, inputs: Sequence[EvalInput], fingerprint: str
) -> None:
    """Store a run's held-out evaluation: ``eval/held-out.json`` and, for every input,
    ``eval/images/<id>/{lr,hr,<label>}.png`` (the first candidate of each model, which the
    run report shows as an image grid); then mark the stage done."""
    from dp2o_core.atomic import write_text_atomic
    from dp2o_core.imageio import tensor_to_array, write_png

    folder = store.stage_dir("eval") / "images"
    for item in inputs:
        images = {"lr": item.lr[0], "hr": item.hr[0] if item.hr is not None else None}
        images |= {model.label: model.examples[item.id] for model in evaluation.models}
        for name, image in images.items():
            if image is not None:
                write_png(folder / item.id / f"{name}.png", tensor_to_array(image))
    record = evaluation.to_record()
    write_text_atomic(store.stage_dir("eval") / RESULT_FILE, json.dumps(record, indent=2) + "\n")
    store.complete(
        "eval", fingerprint, inputs=len(inputs), num_samples=evaluation.num_samples, seeds=evaluation.seeds
    )


def progress_unit(models: int, seeds: int) -> str:
    """What one step of the evaluation's progress bar is: one input sampled and scored by one
    model (with one seed set), so a bar of 2 inputs and 2 models counts to 4 of these, not to
    4 "inputs"."""
    parts = ["input", *(["model"] if models > 1 else []), *(["seed set"] if seeds > 1 else [])]
    return " × ".join(parts) if len(parts) > 1 else "inputs"


def check_per_input_path(path: Path) -> None:
    """Raise a usage error unless ``path`` names a .csv or a .json file that can be written
    (checked before the evaluation starts, and the suffix again where the file is written)."""
    from dp2o_core.atomic import writable_problem
    from dp2o_core.errors import UsageError

    if path.suffix not in (".csv", ".json"):
        raise UsageError(f"--per-input {path}: name a .csv or a .json file")
    problem = writable_problem(path)
    if problem:
        raise UsageError(
            f"--per-input {path} cannot be written: {problem}; name a file in a folder you can write"
        )


def write_per_input(evaluation: Evaluation, path: Path) -> None:
    """The per-input table (:meth:`Evaluation.per_input_rows`) as CSV (``.csv``) or as a JSON
    list of rows (``.json``), written atomically; columns are quantity keys (a metric's name,
    ``diversity``, ``reward.best``/``mean``/``worst``, ``reward.<part>``)."""
    import csv
    import io

    from dp2o_core.atomic import write_text_atomic
    from dp2o_core.errors import UsageError

    if path.suffix not in (".csv", ".json"):
        raise UsageError(f"--per-input {path}: name a .csv or a .json file")
    rows = evaluation.per_input_rows()
    if path.suffix == ".json":
        text = json.dumps(rows, indent=1) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, fieldnames=list(rows[0]) if rows else ["input", "model"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    write_text_atomic(path, text)


def read_eval(store: RunStore) -> dict[str, Any] | None:
    """The stored evaluation record of a run, or None when the stage has not finished."""
    if store.completion("eval") is None:
        return None
    return json.loads((store.stage_dir("eval") / RESULT_FILE).read_text(encoding="utf-8"))
