"""Finished sampling, scoring and pretraining are never discarded by omission.

Sampling and scoring are the method's expensive stages (the paper's sampling took days of
GPU time), and so is pretraining a generator (``dp2o pretrain``: its checkpoints). A stage
whose fingerprint changes is cleared and redone, so a command whose settings differ from the
run's — a flag not repeated, another config file, a changed input photograph, a retrained
earlier round — would silently throw that work away. Before anything is written,
:func:`refuse_discarding` predicts every stage's fingerprint after the command (walking the
pipeline in order: a stage changes when its own configuration does or when a stage it reads
changes) and stops with one message listing each such stage holding work that would be
discarded and why, unless the command was given ``--redo`` (:attr:`RunOptions.redo`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dp2o_core.errors import UsageError
from dp2o_core.pipeline.context import RunContext
from dp2o_core.pipeline.stage import Stage
from dp2o_core.store import RunStore

#: The stages whose work is too expensive to redo without being asked.
COSTLY_STAGES = ("sample", "score", "pretrain")


@dataclass(frozen=True)
class Discard:
    """Finished work of one stage that a command would throw away."""

    #: the stage, with the round it belongs to (``sample``, ``score (round 2)``)
    where: str
    groups: int
    #: why the stage would be redone
    why: str
    #: what ``groups`` counts
    unit: str = "finished group(s)"

    def line(self) -> str:
        return f"{self.where}: {self.groups} {self.unit} would be discarded — {self.why}"


class FinishedWorkError(UsageError):
    """A command would discard finished sampling or scoring, and ``--redo`` was not given."""


def refuse_discarding(stages: Sequence[Stage], ctx: RunContext) -> None:
    """Raise :class:`FinishedWorkError` listing the finished sampling and scoring that running
    ``stages`` with ``ctx``'s configuration would discard (nothing when ``ctx.options.redo``)."""
    if ctx.options.redo:
        return
    discards = discarded_work(stages, ctx)
    if discards:
        raise FinishedWorkError(
            f"this would discard finished work in {ctx.store.root}:\n"
            + "\n".join(f"  - {d.line()}" for d in discards)
            + "\nRun with the run's own settings (on an existing run dp2o train starts from the "
            "configuration it recorded: drop the flags or config file that change it), or pass "
            "--redo to discard that work and redo it. Nothing was written."
        )


def discarded_work(stages: Sequence[Stage], ctx: RunContext) -> list[Discard]:
    """What running ``stages`` would discard of the run's sampling and scoring (see the module
    docstring); with round 1's training among them, the later rounds' work too."""
    from dp2o_core.pipeline.runner import stage_config

    store, label = ctx.store, _label(ctx)
    changed: dict[str, str] = {}  # stage → the first change its new fingerprint comes from
    discards: list[Discard] = []
    for stage in stages:
        if stage.kept(ctx) is not None or (stage.main_only and not ctx.process.is_main):
            continue
        record = store.record(stage.name)
        upstream = next((up for up in stage.upstream if up in changed), None)
        if upstream is not None:
            why, cause = (
                f"it reads the {upstream!r} stage, which is redone ({changed[upstream]})",
                changed[upstream],
            )
        else:
            own = (
                "it has not run yet"
                if record is None
                else own_change(store, stage, ctx, stage_config(stage, ctx), record)
            )
            if not own:
                continue
            why, cause = own, f"{stage.name}{label}: {own}"
        changed[stage.name] = cause
        done, unit = stage.finished_work(store)
        if stage.name in COSTLY_STAGES and done:
            discards.append(Discard(f"{stage.name}{label}", done, why, unit))
    if ctx.round is None and "train" in changed:
        discards += _later_rounds(ctx, f"round 1's training is redone ({changed['train']})")
    elif ctx.round is None and any(s.name == "train" for s in stages):
        discards += _later_rounds(ctx, None)
    return discards


def own_change(
    store: RunStore, stage: Stage, ctx: RunContext, config: Mapping[str, Any], record: Mapping[str, Any]
) -> str | None:
    """Why ``stage`` (which has a record, and whose upstream stages do not change) will get
    another fingerprint, or None when it keeps its own."""
    inputs = {}
    for up in stage.upstream:
        upstream = store.record(up)
        if upstream is None or not isinstance(upstream.get("fingerprint"), str):
            return f"the {up!r} stage it reads is missing"
        inputs[up] = upstream["fingerprint"]
    expected = store.predicted_fingerprint(stage.name, config, inputs, stage.group_signatures(ctx))
    if expected == record.get("fingerprint"):
        return None
    if record.get("imported"):
        return "its scores were imported (dp2o pairs --scores) and would be computed anew"
    differences = config_differences(record.get("config") or {}, config)
    if differences:
        return "its settings changed: " + "; ".join(differences)
    if record.get("inputs", {}) != inputs:
        changed = [up for up in stage.upstream if record.get("inputs", {}).get(up) != inputs[up]]
        return f"the {changed[0]!r} stage it reads was redone since"
    return "some of its input files changed"


def _later_rounds(ctx: RunContext, why: str | None) -> list[Discard]:
    """Sampling and scoring of rounds 2…count that this command will redo: all of them when
    round 1's training changes (``why``), else those whose data changes with ``fresh_data``."""
    from dp2o_core.pipeline.rounds import round_dir, round_numbers

    settings = ctx.config.rounds
    discards = []
    for number in round_numbers(ctx.store.root)[1:]:
        if number > settings.count:
            continue
        store = RunStore(round_dir(ctx.store.root, number))
        reason = why
        if reason is None:
            linked = store.stage_dir("data").is_symlink()
            has_own = store.stage_dir("data").is_dir() and not linked
            if settings.fresh_data and linked:
                reason = "--fresh-data gives the round crops of its own (it used round 1's)"
            elif not settings.fresh_data and has_own:
                reason = "--same-data gives the round round 1's crops (it had its own)"
        if reason is None:
            continue
        for stage in COSTLY_STAGES:
            done = _finished_groups(store, stage)
            if done:
                discards.append(Discard(f"{stage} (round {number})", done, reason))
    return discards


def _finished_groups(store: RunStore, stage: str) -> int:
    """Groups ``stage`` has committed (0 for a stage that never ran)."""
    return store.status(stage).groups_done if store.record(stage) is not None else 0


def config_differences(before: Mapping[str, Any], after: Mapping[str, Any], limit: int = 4) -> list[str]:
    """``key: old → new`` for each setting that differs (nested keys dotted), at most ``limit``."""
    old, new = _flatten(before), _flatten(_jsonable(after))
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k, _ABSENT) != new.get(k, _ABSENT))
    lines = [f"{k}: {_show(old.get(k, _ABSENT))} → {_show(new.get(k, _ABSENT))}" for k in keys[:limit]]
    if len(keys) > limit:
        lines.append(f"and {len(keys) - limit} more")
    return lines


_ABSENT = object()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: value}


def _jsonable(value: Any) -> Any:
    """``value`` as its JSON record reads back (tuples as lists, paths as text)."""
    import json

    return json.loads(json.dumps(value, default=str))


def _show(value: Any) -> str:
    return "(unset)" if value is _ABSENT else repr(value)


def _label(ctx: RunContext) -> str:
    return "" if ctx.round is None else f" (round {ctx.round.number})"
