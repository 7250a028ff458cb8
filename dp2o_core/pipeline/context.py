"""What the stages of one run share: the run, its configuration, its components, this process,
how to talk to the user (:class:`Reporter`) and how the command runs them (:class:`RunOptions`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from dp2o_core.config import RunConfig
from dp2o_core.specs import Resolved
from dp2o_core.store import ProcessInfo, RunStore

#: (start(total), advance(count, note=None)) — the callbacks that drive one progress bar.
ProgressCallbacks = tuple[Callable[[int], None], Callable[..., None]]


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None


class Reporter:
    """How a pipeline tells its user what happens. This base class says nothing (library
    use, other processes); the CLI's reporter prints to the console and draws progress bars."""

    def announce(self, stage: str, text: str) -> None:
        """One line about ``stage`` (``current — skipped``, ``partial — continuing``, …)."""

    def note(self, stage: str, text: str) -> None:
        """A line of what ``stage`` found, printed under its announcement (a pairs summary)."""

    @contextmanager
    def progress(self, bars: Sequence[tuple[str, str]]) -> Iterator[list[ProgressCallbacks]]:
        """Callbacks for one bar per (label, unit), shown while the block runs."""
        yield [(_ignore, _ignore) for _ in bars]


@dataclass(frozen=True)
class RunOptions:
    """How a command runs the stages, beyond the run configuration (nothing here is fingerprinted)."""

    #: stop at an unusable input image, or skip it and list it in the bad_images table
    on_bad_image: Literal["error", "skip"] = "error"
    #: continue training from the newest checkpoint (False: start training over)
    resume: bool = True
    #: data items loaded and degraded together
    data_batch_size: int = 16
    #: the settings sections (``sample``, ``train``, ``eval``) this command records in config.json
    owns: tuple[str, ...] = ()
    #: a changed setting may discard finished sampling or scoring (:mod:`dp2o_core.pipeline.guard`)
    redo: bool = False
    #: stages this command may finish in one job after shard jobs left them partial (``dp2o sample``:
    #: ``sample``); any other command names the unfinished shards (:mod:`dp2o_core.pipeline.shards`)
    completes: tuple[str, ...] = ()


@dataclass
class RunContext:
    """What the stages of one run share: the store, the configuration, the plugins, this
    process, the components (resolved and built once), the reporter and the accelerator."""

    store: RunStore
    config: RunConfig
    manager: Any
    process: ProcessInfo
    reporter: Reporter = field(default_factory=Reporter)
    options: RunOptions = field(default_factory=RunOptions)
    #: accelerate's Accelerator when the run trains (barriers between processes), else None
    accelerator: Any = None
    resolved: dict[str, Resolved] = field(default_factory=dict)
    _built: dict[str, Any] = field(default_factory=dict)
    #: the spec of the tuned model, once :func:`tuned_spec` has made it
    tuned: str | None = None
    #: values a stage computes once and uses twice (the data set's item signatures)
    computed: dict[str, Any] = field(default_factory=dict)
    #: which round of an iterative run this context runs (None: round 1, the run itself)
    round: Round | None = None
    #: takes the run's writer lock, for a run that does not exist yet: called (once) by
    #: :meth:`claim_run` when the run is first written, so a refused command leaves no folder
    claim: Callable[[], None] | None = None

    def claim_run(self) -> None:
        """Take the run's writer lock now if the command deferred it (see :attr:`claim`)."""
        if self.claim is not None:
            claim, self.claim = self.claim, None
            claim()

    def component(self, key: str) -> Resolved:
        """The configured component ``key`` (``backbone``, ``reward``, …), resolved once."""
        if key not in self.resolved:
            self.resolved.update(self.config.resolve(self.manager, (key,)))
        return self.resolved[key]

    def build(self, key: str) -> Any:
        """The component ``key`` built (models loaded) once and kept until :meth:`release`."""
        if key not in self._built:
            self._built[key] = self.component(key).build()
        return self._built[key]

    def release(self, key: str) -> None:
        """Drop a built component (a model's memory before the next one loads)."""
        self._built.pop(key, None)

    def release_all(self) -> None:
        """Drop every built component (a round's models before the next round loads its own)."""
        self._built.clear()

    def barrier(self) -> None:
        """Wait until every process gets here (a no-op in one process)."""
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    @cached_property
    def keeps_run_data(self) -> bool:
        """No data set given and the run holds a finished data stage: the run keeps its data."""
        return self.config.data.name is None and self.store.status("data").state == "done"

    @property
    def seed(self) -> int:
        """The seed of this round's data, candidates and training: the run's base seed in
        round 1, one derived from it and the round's number after (the held-out evaluation
        keeps the base seed, so every round is evaluated on the same inputs and seeds)."""
        if self.round is None:
            return self.config.seed
        from dp2o_core.store.fingerprint import derive_seed

        return derive_seed(self.config.seed, "round", self.round.number) % 2**31

    @property
    def base_backbone(self) -> str:
        """The component key of the model the run started from: the held-out evaluation's base,
        and the backbone whose options enter the sample and train fingerprints (in a later
        round the round's own spec differs from it only by the path of the previous round's
        weights, which the round's record identifies by their training's fingerprint — so a
        moved or copied run stays current)."""
        return "backbone" if self.round is None else BASE_BACKBONE

    @property
    def trained_backbone(self) -> str:
        """The component key of the backbone the train stage loads: the one that sampled, or
        in a later round with ``reference = "base"`` the base model (which then starts from
        the sampling model's trained weights, so that the reference stays the base)."""
        if self.round is not None and self.round.reference == "base":
            return BASE_BACKBONE
        return "backbone"


#: The component key under which a later round's context holds round 1's backbone.
BASE_BACKBONE = "base_backbone"


@dataclass(frozen=True)
class Round:
    """A round r ≥ 2 of an iterative run (round 1 is the run itself)."""

    number: int
    #: the DPO reference: "base" (round 1's model) or "previous" (the model that sampled)
    reference: str
    #: the fingerprint of round r − 1's train stage: the model that samples this round
    previous: str

    def record(self, stage: str) -> dict[str, Any]:
        """What enters ``stage``'s fingerprint in this round: the round and the previous round's
        training (retraining round r − 1 redoes round r), and for training and evaluation the
        reference (changing it keeps the round's candidates, scores and pairs)."""
        record: dict[str, Any] = {"number": self.number, "previous_train": self.previous}
        if stage in ("train", "eval"):
            record["reference"] = self.reference
        return record


@dataclass
class StageRun:
    """What one stage did in this process: units of work (for the timings), its result, and a
    line worth printing after it."""

    units: int | None = None
    result: Any = None
    note: str | None = None
