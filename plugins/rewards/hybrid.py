"""The hybrid perceptual reward of DP²O-SR and its offline preset.

Per metric φ of a group of M candidates: orient so higher is better (negate when the
metric's own ``lower_better`` says so), then min-max normalise within the group,
s̄ = (s − min) / (max − min), or 0.5 for every candidate when the metric is constant in the
group. R_m = balance · mean_FR s̄ + (1 − balance) · mean_NR s̄, balance 0.5 by default; when
one set is empty R is the mean of the other. :func:`hybrid_rewards_block` computes the same
for many groups at once (the pairs stage's path), adding the metrics of a set left to right
as the per-group form does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dp2o_plugins.rewards.pyiqa_metric import (
    MetricOptions,
    PyiqaReward,
    key_value_pairs,
    metric_info,
    pyiqa_configs,
)
from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from dp2o_core import MetricInfo, RewardModel, runtime_option
from dp2o_core.errors import Dp2oError, did_you_mean

PAPER_FR = ["lpips", "topiq_fr", "afine_fr"]
PAPER_NR = ["maniqa", "musiq", "clipiqa+", "topiq_nr", "afine_nr", "qalign"]


def normalise_within_group(values: Sequence[float], lower_better: bool) -> list[float]:
    """Orient (higher is better) and min-max normalise one metric's scores of one group."""
    oriented = [-float(v) if lower_better else float(v) for v in values]
    low, high = min(oriented), max(oriented)
    if high == low:
        return [0.5] * len(oriented)
    return [(v - low) / (high - low) for v in oriented]


def hybrid_rewards(
    scores: Mapping[str, Sequence[float]],
    infos: Sequence[MetricInfo],
    fr: Sequence[str],
    nr: Sequence[str],
    balance: float = 0.5,
) -> list[float]:
    """R for every candidate of one group from raw scores (keyed by metric name)."""
    by_name = {info.name: info for info in infos}
    size = len(next(iter(scores.values())))

    from dp2o_core.segments import left_to_right

    def set_mean(names: Sequence[str]) -> list[float] | None:
        if not names:
            return None
        normalised = [normalise_within_group(scores[n], by_name[n].lower_better) for n in names]
        return [left_to_right(column[m] for column in normalised) / len(normalised) for m in range(size)]

    fr_mean, nr_mean = set_mean(fr), set_mean(nr)
    if fr_mean is None:
        return nr_mean  # type: ignore[return-value]
    if nr_mean is None:
        return fr_mean
    return [balance * f + (1 - balance) * n for f, n in zip(fr_mean, nr_mean, strict=True)]


def hybrid_rewards_block(
    scores: Mapping[str, Any],
    infos: Sequence[MetricInfo],
    fr: Sequence[str],
    nr: Sequence[str],
    offsets: Any,
    balance: float = 0.5,
):
    """:func:`hybrid_rewards` for every group of a block (flat arrays, see dp2o_core.segments)."""
    import numpy as np

    from dp2o_core.segments import expand, segment_max, segment_min

    by_name = {info.name: info for info in infos}

    def normalised(name: str):
        values = np.asarray(scores[name], dtype=np.float64)
        oriented = -values if by_name[name].lower_better else values
        low = expand(segment_min(oriented, offsets), offsets)
        span = expand(segment_max(oriented, offsets), offsets) - low
        constant = span == 0
        out = np.full(len(oriented), 0.5)
        out[~constant] = (oriented[~constant] - low[~constant]) / span[~constant]
        return out

    def set_mean(names: Sequence[str]):
        if not names:
            return None
        total = np.zeros(int(offsets[-1]))
        for name in names:
            total = total + normalised(name)
        return total / len(names)

    fr_mean, nr_mean = set_mean(fr), set_mean(nr)
    if fr_mean is None:
        return nr_mean
    if nr_mean is None:
        return fr_mean
    return balance * fr_mean + (1 - balance) * nr_mean


class HybridOptions(MetricOptions):
    """Metric sets and their balance; metric options apply to every member."""

    fr: list[str] = Field(
        PAPER_FR,
        description="Full-reference members: pyiqa metrics or reward plugins "
        "(paper: lpips, topiq_fr, afine_fr).",
    )
    nr: list[str] = Field(
        PAPER_NR,
        description="No-reference members: pyiqa metrics or reward plugins "
        "(paper: maniqa, musiq, clipiqa+, topiq_nr, afine_nr, qalign).",
    )
    balance: float = Field(
        0.5, ge=0, le=1, description="Weight of the FR mean; the NR mean gets 1 − balance."
    )
    weights: dict[str, Path] = Field({}, description="Weight file per metric name, e.g. [niqe=/w/niqe.mat].")
    pythons: dict[str, Path | None] = runtime_option(
        {},
        description="Interpreter per member run in a worker process, e.g. [qalign=/opt/qalign/bin/python] "
        "(python= applies to every pyiqa member).",
    )

    @field_validator("weights", "pythons", mode="before")
    @classmethod
    def _pairs_to_dict(cls, value: Any, info: ValidationInfo) -> Any:
        pairs = key_value_pairs(value)
        if info.field_name == "pythons" and isinstance(pairs, dict):
            # pythons=[qalign=none] takes one member back into dp2o's process
            none = ("", "none", "null")
            return {
                k: None if isinstance(v, str) and v.strip().lower() in none else v for k, v in pairs.items()
            }
        return pairs

    #: member name → the reward plugin class that scores it (pyiqa members are not listed)
    _plugin_members: dict[str, type[RewardModel]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _sets(self, info: ValidationInfo):
        if not self.fr and not self.nr:
            raise ValueError("fr and nr cannot both be empty")
        both = set(self.fr) & set(self.nr)
        if both:
            raise ValueError(f"metrics in both sets: {sorted(both)}")
        members = [*self.fr, *self.nr]
        strangers = [name for name in self.pythons if name not in members]
        if strangers:
            close = did_you_mean(strangers[0], members)
            raise ValueError(
                f"pythons names {strangers[0]!r}, which is not a member of this reward"
                + (f" (did you mean {close!r}?)" if close else "")
                + f"; members: {', '.join(members)}"
            )
        manager = (info.context or {}).get("plugins") if info is not None else None
        self._plugin_members = plugin_members([*self.fr, *self.nr], manager)
        return self

    def member_plugins(self) -> dict[str, type[RewardModel]]:
        """The members that are reward plugins (name → class); every other member is pyiqa's."""
        return dict(self._plugin_members)


def plugin_members(names: Sequence[str], manager: Any = None) -> dict[str, type[RewardModel]]:
    """Which member names are installed reward plugins; raises naming any name that is neither
    a pyiqa metric nor such a plugin (with the closest known name).

    A pyiqa metric name is scored by pyiqa. Any other name must be a registered reward (not
    ``pyiqa``, not a hybrid), which scores itself; its metrics become columns of the scores
    table. The plugins are looked up in ``manager`` (a fresh one when None).
    """
    configs = pyiqa_configs()
    unknown = [name for name in names if name not in configs]
    if not unknown:
        return {}
    if manager is None:
        from dp2o_core.registry import PluginManager

        manager = PluginManager()
    rewards = {
        name: registration.cls
        for name, registration in manager.implementations("reward").items()
        if not issubclass(registration.cls, (HybridReward, PyiqaReward))
    }
    for name in unknown:
        if name not in rewards:
            close = did_you_mean(name, [*configs, *rewards])
            hint = f" Did you mean {close!r}?" if close else ""
            raise ValueError(
                f"unknown pyiqa metric {name!r}.{hint} A member is a pyiqa metric or an installed reward "
                "plugin; `dp2o plugins --kind reward` lists the plugins"
            )
    return {name: rewards[name] for name in unknown}


class HybridReward(RewardModel):
    """DP²O-SR's hybrid reward: equal-weight mean of group-normalised FR and NR metrics."""

    name = "hybrid"
    Options = HybridOptions

    def __init__(self, options=None) -> None:
        super().__init__(options)
        plugins = self.options.member_plugins()
        #: the members that are reward plugins, built now (a reward's constructor is cheap)
        self._plugins: dict[str, RewardModel] = {name: cls() for name, cls in plugins.items()}
        self.infos: list[MetricInfo] = []
        #: the scores-table columns of each set (a plugin member may have several)
        self.columns: dict[str, list[str]] = {"FR": [], "NR": []}
        for name, expected in [(n, "FR") for n in self.options.fr] + [(n, "NR") for n in self.options.nr]:
            member = self._plugins.get(name)
            infos = list(member.metrics()) if member is not None else [metric_info(name)]
            for info in infos:
                if info.mode != expected:
                    raise Dp2oError(
                        f"hybrid reward: {info.name!r} is a {info.mode} metric but is listed under "
                        f"{expected.lower()}; move {name!r} to the {info.mode.lower()} set"
                    )
                if any(known.name == info.name for known in self.infos):
                    raise Dp2oError(f"hybrid reward: two members report a metric named {info.name!r}")
                self.infos.append(info)
                self.columns[expected].append(info.name)
        self._members: dict[str, RewardModel] | None = None

    def metrics(self) -> Sequence[MetricInfo]:
        """Every member metric, FR first."""
        return list(self.infos)

    @classmethod
    def readiness(cls, options: Any) -> list:
        """Every member's requirements: a pyiqa member's packages and weights, a plugin
        member's own readiness."""
        from dp2o_plugins.rewards.readiness import metric_checks

        plugins = options.member_plugins()
        checks: list = []
        for name in [*options.fr, *options.nr]:
            who = f"reward {cls.name}: {name}"
            if name in plugins:
                member = plugins[name]
                checks += [replace(c, component=who) for c in member.readiness(member.Options())]
            elif name not in cls.bundled_weights():
                weights, python = options.weights.get(name), options.pythons.get(name, options.python)
                checks += metric_checks(
                    name, pyiqa_configs()[name], weights, options.weights_dir, who, python
                )
        return checks

    @classmethod
    def bundled_weights(cls) -> tuple[str, ...]:
        """Members whose weights this reward brings itself (none here)."""
        return ()

    def members(self) -> dict[str, RewardModel]:
        """One reward per member: a pyiqa reward per pyiqa metric, sharing this reward's metric
        options, and the reward plugins named as members."""
        if self._members is None:
            shared = self.options.model_dump(include=set(MetricOptions.model_fields))
            self._members = {
                name: self._plugins.get(name)
                or PyiqaReward(PyiqaReward.Options(**self.member_options(name, shared)))
                for name in [*self.options.fr, *self.options.nr]
            }
        return self._members

    def member_options(self, name: str, shared: dict[str, Any]) -> dict[str, Any]:
        """The options of pyiqa member ``name``: the shared metric options, its weight file and
        its interpreter (``pythons``, else ``python``)."""
        python = self.options.pythons.get(name, shared.get("python"))
        return {**shared, "metric": name, "weights": self.options.weights.get(name), "python": python}

    def prepare(self) -> None:
        """Create every member metric."""
        for member in self.members().values():
            member.prepare()

    def score(self, candidates, reference=None):
        """Raw scores of every member metric."""
        scores: dict[str, Sequence[float]] = {}
        for member in self.members().values():
            scores.update(member.score(candidates, reference))
        return scores

    def reward(self, scores: Mapping[str, Sequence[float]]):
        """The hybrid reward (module docstring) of one group's raw scores."""
        for name in [*self.columns["FR"], *self.columns["NR"]]:
            if any(not math.isfinite(float(v)) for v in scores[name]):
                raise Dp2oError(f"metric {name!r} has a non-finite score in this group")
        return hybrid_rewards(
            scores, self.infos, self.columns["FR"], self.columns["NR"], self.options.balance
        )

    def reward_parts(self, scores: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
        """The FR half (the FR metrics' normalised mean) and the NR half, when both sets are used."""
        fr, nr = self.columns["FR"], self.columns["NR"]
        if not fr or not nr:
            return {}
        return {
            "FR": hybrid_rewards(scores, self.infos, fr, []),
            "NR": hybrid_rewards(scores, self.infos, [], nr),
        }

    def reward_block(self, scores, offsets):
        """:meth:`reward` for every group of a block, vectorised (same values)."""
        import numpy as np

        for name in [*self.columns["FR"], *self.columns["NR"]]:
            if not np.isfinite(np.asarray(scores[name], dtype=np.float64)).all():
                raise Dp2oError(f"metric {name!r} has a non-finite score in this group")
        return hybrid_rewards_block(
            scores, self.infos, self.columns["FR"], self.columns["NR"], offsets, self.options.balance
        )


OFFLINE_FR = ["fsim", "vsi", "gmsd"]
OFFLINE_NR = ["niqe", "piqe"]


class OfflineHybridOptions(HybridOptions):
    """The hybrid reward with metrics that have real parameters and need no download."""

    fr: list[str] = Field(OFFLINE_FR, description="Classical full-reference metrics (no weights needed).")
    nr: list[str] = Field(
        OFFLINE_NR,
        description="Classical no-reference metrics; NIQE uses the pristine model shipped in iqa-torch.",
    )


class OfflineHybridReward(HybridReward):
    """Hybrid reward from FSIM, VSI, GMSD (FR) and NIQE, PIQE (NR): real parameters, no download."""

    name = "hybrid-offline"
    Options = OfflineHybridOptions

    @classmethod
    def bundled_weights(cls) -> tuple[str, ...]:
        """NIQE's parameters come from the iqa-torch package, not a download."""
        return ("niqe",)

    @classmethod
    def readiness(cls, options: Any) -> list:
        """The members' requirements, and iqa-torch for NIQE's parameters."""
        from dp2o_plugins.rewards.readiness import package_check

        checks = list(super().readiness(options))
        if "niqe" in [*options.fr, *options.nr] and "niqe" not in options.weights:
            checks.append(package_check(f"reward {cls.name}: niqe", "iqa-torch", "iqa"))
        return checks

    def members(self) -> dict[str, RewardModel]:
        """Members, with NIQE pointed at the pristine parameters from the iqa-torch package."""
        if (
            self._members is None
            and "niqe" in [*self.options.fr, *self.options.nr]
            and "niqe" not in self.options.weights
        ):
            from dp2o_plugins.rewards.offline import niqe_pristine_params

            self.options = self.options.model_copy(
                update={"weights": {**self.options.weights, "niqe": niqe_pristine_params()}}
            )
        return super().members()
