"""Iterative on-policy rounds: the preference data follows the model as it moves.

DP²O-SR is offline: one frozen model samples every candidate once, so the pairs describe
the base model's outputs however far training takes the policy. With ``rounds.count = K``
round 1 is the method as it is (the run's own stages), and each round r ≥ 2 is a run of
its own in ``RUN/rounds/<r>/`` whose backbone is round r − 1's tuned model: it samples its
candidates with that model (on-policy), scores and pairs them, and trains on from its
weights. The DPO reference is that same model (``reference = "previous"``, each round a
trust region around the last) or the base model (``"base"``: the policy starts from round
r − 1's weights but is pulled towards the model the run began with). Round r reuses
round 1's data (a link to ``RUN/data``) unless ``fresh_data`` reseeds it by round; its
sampling and training seeds derive from the run's seed and r; its held-out evaluation
compares the base model with round r's, on the run's seed, so every round is measured on
the same inputs and seeds.

Every round's stages resume and skip like round 1's: a round's fingerprints include the
previous round's training, so retraining round 1 redoes the rounds after it, and a run
killed in round 2 continues there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dp2o_core.errors import Dp2oError
from dp2o_core.pipeline.context import BASE_BACKBONE, ProgressCallbacks, Reporter, Round, RunContext
from dp2o_core.store import RunStore

#: Where round r ≥ 2 of a run lives, relative to the run directory.
ROUNDS_DIR = "rounds"


def round_dir(run: Path, number: int) -> Path:
    """The run directory of round ``number`` (round 1 is the run itself)."""
    return Path(run) if number == 1 else Path(run) / ROUNDS_DIR / str(number)


def round_numbers(run: Path) -> list[int]:
    """The rounds a run directory holds: 1 and every ``rounds/<r>/`` folder, in order."""
    folder = Path(run) / ROUNDS_DIR
    later = (
        sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
        if folder.is_dir()
        else []
    )
    return [1, *later]


def round_statuses(run: Path) -> dict[int, list[Any]]:
    """Every round's stage statuses (:meth:`RunStore.statuses`), with what a round's own store
    cannot see: a round r ≥ 2 whose stages were made from another training of round r − 1 than
    the one the run now holds is ``stale`` (retraining round r − 1 redoes it), and one beyond
    the number of rounds the run's configuration records says so (it is kept, not current)."""
    from dp2o_core.config import read_run_record

    try:
        count = int(((read_run_record(RunStore(run)) or {}).get("rounds") or {}).get("count") or 1)
    except (Dp2oError, ValueError, TypeError, AttributeError):
        count = None  # status still shows the stages of a run whose record is damaged
    found: dict[int, list[Any]] = {}
    for number in round_numbers(run):
        store = RunStore(round_dir(run, number))
        statuses = store.statuses()
        if number > 1:
            previous = (RunStore(round_dir(run, number - 1)).record("train") or {}).get("fingerprint")
            sampled = store.record("sample")
            made_from = ((sampled or {}).get("config") or {}).get("round", {})
            retrained = sampled is not None and made_from.get("previous_train") != previous
            reasons = []
            if retrained:
                reasons.append(f"round {number - 1} was retrained since; --rounds {number} redoes this round")
            if count is not None and number > count:
                reasons.append(f"beyond the {count} round(s) the run is configured for")
            for status in statuses:
                if status.state == "missing" or not reasons:
                    continue
                if retrained and status.state in ("done", "partial", "damaged"):
                    status.state = "stale"
                status.reason = "; ".join(filter(None, [status.reason, *reasons]))
        found[number] = statuses
    return found


def round_evaluations(run: Path) -> list[tuple[int, Any]]:
    """(round, :class:`~dp2o_core.evaluation.Evaluation`) of every round of ``run`` whose
    held-out evaluation has finished, in order."""
    from dp2o_core.evaluation import Evaluation, read_eval

    found = []
    for number in round_numbers(run):
        record = read_eval(RunStore(round_dir(run, number)))
        if record is not None:
            found.append((number, Evaluation.from_record(record)))
    return found


def next_round(previous: RunContext, first: RunContext) -> RunContext:
    """The context of the round after ``previous``: its backbone is ``previous``'s tuned
    model, its store ``RUN/rounds/<r>/`` (with round 1's data linked in unless the data is
    fresh each round)."""
    from dp2o_core.pipeline.tuned import tuned_spec
    from dp2o_core.specs import parse_spec

    completion = previous.store.completion("train")
    if completion is None:
        raise Dp2oError(f"round {_number(previous)} of {first.store.root} has not finished training")
    number = _number(previous) + 1
    settings = first.config.rounds
    store = RunStore(round_dir(first.store.root, number))
    if first.process.is_main:
        _use_data(store, first.store, fresh=settings.fresh_data)
    first.barrier()
    config = first.config.model_copy(update={"backbone": parse_spec(tuned_spec(previous), "backbone")})
    record = (previous.store.record("train") or {}).get("fingerprint", "")
    context = RunContext(
        store=store,
        config=config,
        manager=first.manager,
        process=first.process,
        reporter=RoundReporter(first.reporter, number),
        options=first.options,
        round=Round(number=number, reference=settings.reference, previous=record),
    )
    # round 1's backbone: the held-out evaluation's base, and with reference "base" the one trained
    context.resolved[BASE_BACKBONE] = first.component("backbone")
    return context


def run_rounds(
    first: RunContext,
    run_round: Callable[[RunContext], Any],
) -> Iterator[tuple[RunContext, Any]]:
    """Round 1 in ``first``, then every later round of ``first.config.rounds.count``: each
    context is handed to ``run_round`` (which runs the pipeline in it) and yielded with
    its result once the round is done."""
    context = first
    yield context, run_round(context)
    for _ in range(2, first.config.rounds.count + 1):
        context.release_all()
        context = next_round(context, first)
        yield context, run_round(context)


def starting_weights(ctx: RunContext) -> Callable[[Any], None] | None:
    """What the train stage of a round with the base model as reference starts from: the
    trained parameters of the model that sampled the round (None in every other case)."""
    if ctx.round is None or ctx.trained_backbone != BASE_BACKBONE:
        return None

    def start(backbone: Any) -> None:
        source = ctx.component("backbone").build()
        copy_trained_parameters(source, backbone, what=str(ctx.config.backbone))
        del source

    return start


def copy_trained_parameters(source: Any, target: Any, *, what: str) -> None:
    """Give ``target``'s trained parameters the values of ``source``'s (both backbones of one
    kind, ``target`` already prepared for training). ``source`` is prepared here; the two must
    have the same trained parameters in the same order."""
    import torch

    source.prepare_training()
    given, wanted = list(source.trainable_parameters()), list(target.trainable_parameters())
    shapes = [tuple(p.shape) for p in given], [tuple(p.shape) for p in wanted]
    if shapes[0] != shapes[1]:
        raise Dp2oError(
            f"cannot start the base model's training from {what}: its trained parameters differ "
            f"({len(given)} against {len(wanted)} tensors). Use --reference previous."
        )
    with torch.no_grad():
        for value, parameter in zip(given, wanted, strict=True):
            parameter.copy_(value.detach().to(parameter.device, parameter.dtype))


class RoundReporter(Reporter):
    """The run's reporter, with the round's number after each stage's name."""

    def __init__(self, reporter: Reporter, number: int) -> None:
        self.reporter = reporter
        self.number = number

    def _name(self, stage: str) -> str:
        return f"{stage} (round {self.number})"

    def announce(self, stage: str, text: str) -> None:
        self.reporter.announce(self._name(stage), text)

    def note(self, stage: str, text: str) -> None:
        self.reporter.note(self._name(stage), text)

    @contextmanager
    def progress(self, bars: Sequence[tuple[str, str]]) -> Iterator[list[ProgressCallbacks]]:
        with self.reporter.progress([(self._name(label), unit) for label, unit in bars]) as callbacks:
            yield callbacks


def _number(ctx: RunContext) -> int:
    return 1 if ctx.round is None else ctx.round.number


def _use_data(store: RunStore, first: RunStore, *, fresh: bool) -> None:
    """Give the round the data ``fresh_data`` asks for: a relative link to round 1's data stage
    (the run folder may move), or a data stage of its own. A round switched from one to the
    other drops what it had (the link, or its own crops), so the record and the data agree."""
    link = store.stage_dir("data")
    if fresh:
        if link.is_symlink():
            store.clear("data")  # removes the link only: round 1's data stays
        return
    if link.is_symlink():
        return
    store.clear("data")  # crops of its own from a --fresh-data run
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(first.stage_dir("data"), link.parent), link, target_is_directory=True)
