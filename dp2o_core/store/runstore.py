"""The run directory: stages, their parquet tables, fingerprints, status and resume.

A stage (``data``, ``sample``, ``score``, ``pairs``, ``train``) writes rows keyed by
group. Rows reach disk in *commits*: every table's part file for a batch of groups is
written to a temporary name and renamed, then a commit record naming those files and
groups is renamed into place. Readers use committed parts only, so a process killed at
any moment leaves nothing half-written that is later read as complete; a rerun finds
which groups are committed and does only the rest.

Each process writes under its own ``parts/<writer>/`` folder — ``p<index>``, or
``s<K>-<N>.p<index>`` in shard job K of N — (no two writers on one file); readers see the
union. A stage records a fingerprint of its configuration and of
the stages it reads (``stage.json``); it is ``done`` once process 0 has seen every
process finish and every group committed (``complete.json``), ``partial`` before,
``stale`` when its configuration or an upstream stage changed, ``missing`` when never run.

A stage is ``damaged`` when a commit record is unreadable, a part file it names is
missing or not the size it was written with, or fewer groups are committed than the
stage recorded as finished; a file a stage wrote for a group that is found missing or
unreadable when read (:meth:`RunStore.load_group_file`) damages that group's commit. The
damaged commit no longer counts, so a rerun of the stage redoes exactly its groups; its
files are moved to ``<stage>/damaged/`` when the stage is next opened for writing.

A stage filled by shard jobs (``--shard K/N``, :class:`~dp2o_core.store.sharding.Shard`)
records the split in ``<stage>/shards.json`` (N and the sorted group ids); it is ``done`` once
every group is committed, whichever job commits the last one, and :meth:`RunStore.shard_progress`
says how far each shard is and which job runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dp2o_core.atomic import atomic_path, create_text_exclusive, write_text_atomic
from dp2o_core.errors import Dp2oError, UsageError, short_reason
from dp2o_core.store.commits import (
    Commit,
    DamagedCommit,
    DamagedStageError,
    commit_sequence,
    parts_problem,
    read_commit,
    set_aside,
)
from dp2o_core.store.fingerprint import fingerprint
from dp2o_core.store.lock import StageLock, probe_holder
from dp2o_core.store.schemas import arrow_schema, to_arrow
from dp2o_core.store.sharding import ProcessInfo, Shard

#: Every stage and the stages whose output it reads, in pipeline order.
STAGES: dict[str, tuple[str, ...]] = {
    "data": (),
    "sample": ("data",),
    "score": ("sample",),
    "pairs": ("score",),
    "train": ("pairs",),
    "eval": ("train",),
}

#: Stages outside the DPO method that a run may hold, and what they read: ``pretrain`` builds the
#: generator (``dp2o pretrain``); :meth:`RunStore.statuses` lists it only where it has run.
OPTIONAL_STAGES: dict[str, tuple[str, ...]] = {"pretrain": ()}
#: Every stage the store knows.
KNOWN_STAGES: dict[str, tuple[str, ...]] = {**OPTIONAL_STAGES, **STAGES}

State = Literal["missing", "partial", "done", "stale", "damaged"]
PARTS_PER_FOLDER = 1000
#: The record of a stage filled by shard jobs (see the module docstring).
SHARDS_FILE = "shards.json"
#: A shard job's stage lock: ``locks/<stage>.s<K>-<N>.p000.lock``.
_SHARD_LOCK = re.compile(r"(?P<stage>[a-z]+)\.s(?P<k>\d+)-(?P<n>\d+)\.p000\.lock")


@dataclass
class StageStatus:
    """What ``dp2o status`` shows for one stage."""

    stage: str
    state: State
    fingerprint: str | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    groups_done: int = 0
    groups_total: int | None = None
    rows: dict[str, int] = field(default_factory=dict)
    updated: str | None = None
    reason: str = ""

    def as_record(self) -> dict[str, Any]:
        """JSON-ready form with stable keys."""
        return {
            "stage": self.stage,
            "state": self.state,
            "fingerprint": self.fingerprint,
            "inputs": self.inputs,
            "groups_done": self.groups_done,
            "groups_total": self.groups_total,
            "rows": self.rows,
            "updated": self.updated,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ShardProgress:
    """How far one shard of a stage filled by shard jobs is, and who runs it now."""

    shard: Shard
    done: int
    total: int
    #: the job working on it now (``pid 12 on host n7 since …``), None when none is
    holder: str | None = None

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def describe(self) -> str:
        """``shard 3/8: 120 of 3750 groups left, running (pid …)`` and the like."""
        if self.finished:
            return f"shard {self.shard}: finished ({self.total} groups)"
        left = f"shard {self.shard}: {self.total - self.done} of {self.total} groups left"
        return f"{left}, running ({self.holder})" if self.holder else f"{left}, no job running"

    def as_record(self) -> dict[str, Any]:
        return {
            "shard": str(self.shard),
            "groups_done": self.done,
            "groups_total": self.total,
            "finished": self.finished,
            "running": self.holder,
        }


@dataclass(frozen=True)
class RunningShard:
    """A shard job working on a run now: its stage, its shard and who it is."""

    stage: str
    shard: Shard
    holder: str

    def __str__(self) -> str:
        return f"{self.stage} shard {self.shard} ({self.holder})"


class ShardMismatchError(UsageError):
    """A shard job's settings, inputs or split differ from those the stage was started with."""


class RunStore:
    """A run directory. ``RunStore(path).status("sample")``, ``.read_table("data", "groups")``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{self.root} is a file, not a run directory; name a folder (new or existing)")

    def writer_lock(self, shared: bool = False) -> StageLock:
        """The run's writer lock (``locks/run.lock``): a command that changes the run holds it, in
        its process 0, from before it loads anything until it exits, so a second command on the
        same run stops at once with the holder's host and pid instead of redoing or deleting a
        stage the first one reads. (Per-stage, per-writer locks keep the processes of one
        ``accelerate launch`` apart on top of it.) Shard jobs hold it ``shared``: they fill one
        run together, and a command that needs the run to itself is refused while any runs."""
        return StageLock(
            self.root / "locks" / "run.lock",
            f"run {self.root}",
            shared=shared,
            holders=lambda: [str(job) for job in self.running_shards()],
        )

    def stage_lock(self, stage: str, process: ProcessInfo) -> StageLock:
        """The lock of one writer of ``stage`` (``locks/<stage>.<writer>.lock``), held while it
        writes: two jobs given the same shard (or two processes the same index) never write
        one folder; the second stops with the first one's host and pid."""
        what = f"stage {stage!r} of run {self.root}"
        if process.shard is not None:
            what = f"shard {process.shard} of {what}"
        return StageLock(self.root / "locks" / f"{stage}.{process.writer}.lock", what)

    def running_shards(self) -> list[RunningShard]:
        """The shard jobs working on this run now (their stage locks are held)."""
        running = []
        for path in sorted((self.root / "locks").glob("*.s*-*.p000.lock")):
            match = _SHARD_LOCK.fullmatch(path.name)
            holder = probe_holder(path) if match else None
            if match and holder:
                running.append(RunningShard(match["stage"], Shard(int(match["k"]), int(match["n"])), holder))
        return running

    # -- paths ------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        """The folder holding everything ``stage`` wrote."""
        _check_stage(stage)
        return self.root / stage

    def group_path(
        self, stage: str, subdir: str, group_id: str, filename: str | None = None, *, suffix: str = ""
    ) -> Path:
        """Where a stage keeps a file of one group, spread over 256 bucket folders.

        Without ``filename``: ``<stage>/<subdir>/<bucket>/<group><suffix>``; with it:
        ``<stage>/<subdir>/<bucket>/<group>/<filename>``. ``<group>`` is :func:`safe_name`,
        which is injective, and the suffix is appended (never substituted for a part of the
        id), so two groups never share a file: ``frame.0001`` and ``frame.0002`` give
        ``frame.0001.png`` and ``frame.0002.png``.
        """
        if filename and suffix:
            raise ValueError("group_path takes a filename or a suffix, not both")
        base = self.stage_dir(stage) / subdir / _bucket(group_id) / safe_name(group_id)
        if filename:
            return base / filename
        return base.with_name(base.name + suffix) if suffix else base

    def relative(self, path: Path) -> str:
        """``path`` relative to the run directory, with '/' separators (as tables store it)."""
        return Path(path).relative_to(self.root).as_posix()

    # -- reading ------------------------------------------------------------------------
    def record(self, stage: str) -> dict[str, Any] | None:
        """The stage's ``stage.json`` (configuration, fingerprint, inputs), or None."""
        return _read_json(self.stage_dir(stage) / "stage.json")

    def commits(self, stage: str) -> list[Commit]:
        """Every intact committed batch of ``stage``, ordered by process and sequence."""
        return self._scan(stage)[0]

    def damaged_commits(self, stage: str) -> list[DamagedCommit]:
        """Commit records of ``stage`` that are unreadable or whose part files are missing,
        cut short or marked damaged; their groups count as not done."""
        return self._scan(stage)[1]

    def _scan(self, stage: str) -> tuple[list[Commit], list[DamagedCommit]]:
        found, damaged = [], []
        marks = self._damage_marks(stage)
        for path in (self.stage_dir(stage) / "parts").glob("*/*/part-*.commit.json"):
            commit, problem = read_commit(path)
            if commit is None:
                if path.exists():  # not moved away meanwhile
                    damaged.append(DamagedCommit(path, problem))
                continue
            marked = [marks[g] for g in commit.groups if g in marks]
            problem = marked[0] if marked else parts_problem(commit)
            if problem:
                damaged.append(DamagedCommit(path, problem))
            else:
                found.append(commit)
        return sorted(found, key=lambda c: (c.writer, c.sequence)), sorted(damaged, key=lambda d: d.path)

    def _damage_marks(self, stage: str) -> dict[str, str]:
        """Groups found damaged when read (group id → what was wrong)."""
        marks: dict[str, str] = {}
        for path in (self.stage_dir(stage) / "damaged").glob("group-*.json"):
            record = _read_json(path) or {}
            if isinstance(record.get("group"), str):
                marks[record["group"]] = str(record.get("problem", "a file was found damaged"))
        return marks

    def load_group_file(self, stage: str, group_id: str, relative: str, loader: Callable[[Path], Any]) -> Any:
        """``loader(path)`` for a file that ``stage`` wrote for ``group_id`` (``relative`` to the run).

        A missing or unreadable file means the stage's output is damaged, not that the
        user's input is bad: the group is marked damaged (``dp2o status`` shows it, a rerun
        of the stage redoes its commit) and :class:`DamagedStageError` says so.
        """
        path = self.root / relative
        try:
            return loader(path)
        except Exception as error:  # noqa: BLE001 - any failure to load a file the run wrote
            if path.exists() and not _looks_damaged(error):
                raise
            problem = "is missing" if not path.exists() else f"cannot be read ({short_reason(error)})"
            self.mark_damaged(stage, group_id, f"{relative} {problem}")
            raise DamagedStageError(
                f"stage {stage!r} of run {self.root} is damaged: {relative} (group {group_id!r}) {problem}. "
                + self._rerun_hint(stage)
            ) from None

    def _rerun_hint(self, stage: str) -> str:
        command = _COMMAND.get(stage, "train")
        return (
            f"Run the {stage!r} stage again (dp2o {command} {self.root}, or dp2o train): it redoes "
            "the damaged groups and keeps the rest."
        )

    def verify_files(self, stage: str) -> list[tuple[str, str, str]]:
        """Check that every file ``stage``'s tables name (LR/HR images, candidates, latent
        shards) exists and is not empty; mark the groups of those that are not damaged.

        Returns (group, file relative to the run, problem) for each bad file. One ``stat``
        per file: at the paper's scale (1.92 M candidates) this takes a while, which is why
        ``dp2o status`` does it only with ``--verify``.
        """
        bad = []
        for table, columns in _FILE_COLUMNS.get(stage, {}).items():
            try:
                rows = self.read_table(stage, table, columns=["group_id", *columns])
            except Dp2oError:
                continue  # no such table yet, or the stage is already known damaged
            ids = rows.column("group_id").to_pylist()
            for column in columns:
                for group_id, relative in zip(ids, rows.column(column).to_pylist(), strict=True):
                    if relative is None:
                        continue
                    try:
                        size = (self.root / relative).stat().st_size
                        problem = "is empty" if size == 0 else ""
                    except FileNotFoundError:
                        problem = "is missing"
                    except OSError as error:
                        problem = f"cannot be read ({error.strerror})"
                    if problem:
                        bad.append((group_id, relative, problem))
        for group_id, relative, problem in bad:
            self.mark_damaged(stage, group_id, f"{relative} {problem}")
        return bad

    def mark_damaged(self, stage: str, group_id: str, problem: str) -> None:
        """Record that a file of ``group_id`` in ``stage`` is damaged: its commit stops counting."""
        name = f"group-{hashlib.sha256(group_id.encode('utf-8')).hexdigest()[:24]}.json"
        write_text_atomic(
            self.stage_dir(stage) / "damaged" / name,
            json.dumps({"group": group_id, "problem": problem}) + "\n",
        )

    def done_groups(self, stage: str) -> set[str]:
        """Groups of ``stage`` that are committed."""
        return {g for commit in self.commits(stage) for g in commit.groups}

    def read_table(
        self, stage: str, table: str, columns: Sequence[str] | None = None, filter: Any = None
    ) -> Any:
        """The union of ``table``'s committed parts as one pyarrow Table.

        Reads only the columns asked for; never touches images. Should a group have been
        committed twice, only its first commit's rows are kept. ``filter`` (a pyarrow
        dataset expression, e.g. ``ds.field("group_id").isin(ids)``) keeps matching rows
        only. A stage with a damaged commit is not read at all (:class:`DamagedStageError`):
        its table would silently lack groups.
        """
        import pyarrow as pa
        import pyarrow.dataset as ds

        wanted = list(columns) if columns else None
        parts = self._table_parts(stage, table)
        if not parts:
            raise Dp2oError(f"stage {stage!r} of run {self.root} has no {table!r} table yet")
        schema = arrow_schema(table)
        if schema is not None and not any(repeated for _, repeated in parts):
            # Fixed schema, no duplicates: one multi-threaded scan over every part.
            try:
                return ds.dataset([str(f) for f, _ in parts], schema=schema, format="parquet").to_table(
                    columns=wanted, filter=filter
                )
            except (OSError, pa.ArrowException):
                pass  # read part by part below, which names the damaged file
        pieces = [self._read_part(stage, path, wanted, repeated) for path, repeated in parts]
        joined = pa.concat_tables(pieces, promote_options="default")
        return joined.filter(filter) if filter is not None else joined

    def _table_parts(self, stage: str, table: str) -> list[tuple[Path, set[str]]]:
        """(part file, groups it repeats from an earlier commit) of ``table``, in commit
        order; a stage with a damaged commit raises :class:`DamagedStageError`."""
        commits, damaged = self._scan(stage)
        if damaged:
            raise DamagedStageError(
                f"stage {stage!r} of run {self.root} is damaged: {self.relative(damaged[0].path)}: "
                f"{damaged[0].problem}"
                + (f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else "")
                + ". "
                + self._rerun_hint(stage)
            )
        seen: set[str] = set()
        parts = []
        for commit in commits:
            repeated = seen.intersection(commit.groups)
            seen.update(commit.groups)
            name = commit.tables.get(table)
            if name is not None:
                parts.append((commit.path.parent / name, repeated))
        return parts

    def _read_part(self, stage: str, path: Path, columns: list[str] | None, repeated: set[str]) -> Any:
        """One part file's rows (less those of ``repeated`` groups), or a message naming it."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        try:
            piece = pq.read_table(path, columns=columns)
            if repeated:
                ids = pq.read_table(path, columns=["group_id"]).column("group_id")
                piece = piece.filter(pc.invert(pc.is_in(ids, pa.array(sorted(repeated)))))
        except (OSError, pa.ArrowException) as error:
            raise DamagedStageError(
                f"stage {stage!r} of run {self.root} is damaged: its part file {self.relative(path)} "
                f"cannot be read ({short_reason(error)}). Delete that file and run the stage again "
                "(it redoes the groups of that part)."
            ) from None
        return piece

    def iter_table_blocks(
        self, stage: str, table: str, columns: Sequence[str] | None = None, min_rows: int = 1_000_000
    ) -> Iterator[Any]:
        """``table`` as a sequence of pyarrow Tables of whole commits (at least ``min_rows``
        rows each, but the last): every group's rows arrive in one block, and memory stays
        that of a block however large the table. Rows of a group committed twice are kept
        from its first commit only, as :meth:`read_table` does."""
        import pyarrow as pa

        wanted = list(columns) if columns else None
        pieces: list[Any] = []
        rows = 0
        for path, repeated in self._table_parts(stage, table):
            pieces.append(self._read_part(stage, path, wanted, repeated))
            rows += pieces[-1].num_rows
            if rows >= min_rows:
                yield pa.concat_tables(pieces, promote_options="default")
                pieces, rows = [], 0
        if pieces:
            yield pa.concat_tables(pieces, promote_options="default")

    def status(self, stage: str, expected: str | None = None) -> StageStatus:
        """The state of ``stage``; ``expected`` is the fingerprint a rerun would have."""
        record = self.record(stage)
        if record is None:
            return StageStatus(stage, "missing")
        commits, damaged = self._scan(stage)
        rows: dict[str, int] = {}
        for commit in commits:
            for table, count in commit.rows.items():
                rows[table] = rows.get(table, 0) + count
        status = StageStatus(
            stage,
            "partial",
            fingerprint=record.get("fingerprint"),
            inputs=dict(record.get("inputs", {})),
            groups_done=len({g for c in commits for g in c.groups}),
            groups_total=record.get("groups_total"),
            rows=rows,
            updated=_mtime(self.stage_dir(stage)),
        )
        reason = self._stale_reason(stage, record, expected)
        if reason:
            status.state, status.reason = "stale", reason
            return status
        complete = _read_json(self.stage_dir(stage) / "complete.json")
        finished = complete is not None and complete.get("fingerprint") == record["fingerprint"]
        if not finished and not damaged:
            finished = self._shards_cover(stage, record["fingerprint"], commits)
        if damaged:
            status.state = "damaged"
            status.reason = (
                f"{len(damaged)} damaged commit(s), e.g. {self.relative(damaged[0].path)}: "
                f"{damaged[0].problem}; a rerun redoes their groups"
            )
        elif finished and status.groups_total is not None and status.groups_done < status.groups_total:
            status.state = "damaged"
            status.reason = (
                f"finished, but only {status.groups_done} of {status.groups_total} groups are committed; "
                "a rerun redoes the others"
            )
        elif finished and _missing_output(self.root, complete):
            status.state = "damaged"
            status.reason = (
                f"its result {(complete or {}).get('weights')} is missing or empty; a rerun makes it again "
                "(training resumes from its last checkpoint)"
            )
        elif finished:
            status.state = "done"
        return status

    def _shards_cover(self, stage: str, fingerprint: str, commits: Sequence[Commit]) -> bool:
        """Whether shard jobs filled ``stage`` for ``fingerprint``: every group of its split is
        committed (the job that committed the last one may have died before saying so)."""
        record = self.shard_record(stage)
        if record is None or record.get("fingerprint") != fingerprint:
            return False
        committed = {g for commit in commits for g in commit.groups}
        return committed.issuperset(record.get("groups", ()))

    def shard_record(self, stage: str) -> dict[str, Any] | None:
        """``<stage>/shards.json`` (count, fingerprint, sorted group ids) of a stage that shard
        jobs fill, else None."""
        return _read_json(self.stage_dir(stage) / SHARDS_FILE)

    def shard_progress(self, stage: str) -> list[ShardProgress] | None:
        """Each shard's committed and total groups and the job running it (None: ``stage`` is
        not filled by shard jobs). Probes each shard's lock, so it says who runs now."""
        record = self.shard_record(stage)
        if record is None:
            return None
        ordered = sorted(record.get("groups", ()))
        done = self.done_groups(stage)
        progress = []
        for index in range(int(record["count"])):
            shard = Shard(index, int(record["count"]))
            owned = shard.owns(ordered)
            holder = probe_holder(self.stage_lock(stage, ProcessInfo(shard=shard)).path)
            progress.append(ShardProgress(shard, sum(g in done for g in owned), len(owned), holder))
        return progress

    def unfinished_shards(self, stage: str) -> str:
        """The shards of ``stage`` with groups left, for a message ('' when none or not sharded)."""
        progress = self.shard_progress(stage) or []
        left = [p for p in progress if not p.finished]
        if not left:
            return ""
        command = f"dp2o {_COMMAND.get(stage, stage)} {self.root}"
        idle = [p for p in left if p.holder is None]
        then = (
            f" Restart the idle ones ({command} --shard {idle[0].shard}, …), or finish the rest in one job "
            f"with {command}."
            if idle
            else " Wait for them to finish."
        )
        shown = "; ".join(p.describe() for p in left[:8]) + (
            f"; and {len(left) - 8} more" if len(left) > 8 else ""
        )
        return f"{len(left)} of its {len(progress)} shards have groups left: {shown}.{then}"

    def statuses(self) -> list[StageStatus]:
        """The status of every stage, in pipeline order (an optional stage only where it ran)."""
        optional = [s for s in OPTIONAL_STAGES if self.record(s) is not None]
        return [self.status(stage) for stage in (*optional, *STAGES)]

    def _stale_reason(self, stage: str, record: Mapping[str, Any], expected: str | None) -> str:
        if not isinstance(record.get("fingerprint"), str):
            return f"its {self.relative(self.stage_dir(stage) / 'stage.json')} has no fingerprint"
        if expected is not None and record["fingerprint"] != expected:
            return "its configuration or inputs changed"
        if record.get("imported"):
            return ""
        for upstream in KNOWN_STAGES[stage]:
            upstream_status = self.status(upstream)
            if upstream_status.state != "done":
                return f"upstream stage {upstream!r} is {upstream_status.state}"
            if record.get("inputs", {}).get(upstream) != upstream_status.fingerprint:
                return f"upstream stage {upstream!r} changed"
        return ""

    # -- writing -------------------------------------------------------------------------
    def open_stage(
        self,
        stage: str,
        *,
        config: Mapping[str, Any],
        group_ids: Sequence[str],
        process: ProcessInfo | None = None,
        flush_every: int = 16,
        wait_timeout: float | None = None,
        imported: bool = False,
        group_signatures: Mapping[str, str] | None = None,
    ) -> StageWriter:
        """Start (or continue) writing ``stage``: use as ``with store.open_stage(...) as w``.

        ``config`` is everything that determines the stage's output besides its inputs
        (options, plugin versions, seeds); with the upstream fingerprints it makes the
        stage's fingerprint. A stale stage is cleared first; a partial one continues.
        ``imported`` marks a stage brought in from outside (e.g. a scores table another
        tool wrote): it does not depend on the stages before it.

        ``group_signatures`` (group id → a digest of that group's own inputs, e.g. its
        source file's size and time) are part of the fingerprint, so any change makes the
        stage — and every later one — stale. But when only signatures changed (same
        config, same upstream stages), the stage is not cleared: commits whose groups all
        keep their signatures stay, the others are set aside and redone.
        """
        return StageWriter(
            self,
            stage,
            dict(config),
            list(group_ids),
            process or ProcessInfo.detect(),
            flush_every,
            wait_timeout,
            imported,
            dict(group_signatures) if group_signatures is not None else None,
        )

    def expected_fingerprint(
        self,
        stage: str,
        config: Mapping[str, Any],
        imported: bool = False,
        group_signatures: Mapping[str, str] | None = None,
    ) -> str:
        """The fingerprint ``stage`` gets with ``config`` (and ``group_signatures``, see
        :meth:`open_stage`) over the current upstream stages."""
        inputs = {} if imported else self._upstream_fingerprints(stage)
        return _with_signatures(self._reuse_key(stage, config, imported, inputs), group_signatures)

    def _reuse_key(
        self, stage: str, config: Mapping[str, Any], imported: bool, inputs: Mapping[str, str] | None = None
    ) -> str:
        """The fingerprint without group signatures: equal means per-group work can be kept.
        ``inputs`` (upstream stage → fingerprint) defaults to the upstream stages as they are."""
        if imported:
            inputs = {}
        elif inputs is None:
            inputs = self._upstream_fingerprints(stage)
        return fingerprint({"stage": stage, "config": config, "inputs": dict(inputs)})

    def predicted_fingerprint(
        self,
        stage: str,
        config: Mapping[str, Any],
        inputs: Mapping[str, str],
        group_signatures: Mapping[str, str] | None = None,
    ) -> str:
        """The fingerprint ``stage`` will get with ``config`` once its upstream stages have the
        fingerprints ``inputs`` (which need not be done yet): what a command compares with a
        stage's record to know, before running anything, whether the stage will be redone."""
        return _with_signatures(self._reuse_key(stage, config, False, inputs), group_signatures)

    def _upstream_fingerprints(self, stage: str) -> dict[str, str]:
        inputs = {}
        for upstream in KNOWN_STAGES[stage]:
            status = self.status(upstream)
            if status.state != "done":
                shards = self.unfinished_shards(upstream) if status.state == "partial" else ""
                raise Dp2oError(
                    f"stage {stage!r} reads stage {upstream!r} of run {self.root}, which is "
                    f"{status.state}{f' ({status.reason})' if status.reason else ''}. "
                    + (shards or f"Run {upstream!r} first.")
                )
            inputs[upstream] = str(status.fingerprint)
        return inputs

    def begin(
        self,
        stage: str,
        config: Mapping[str, Any],
        *,
        groups_total: int | None = None,
        imported: bool = False,
        group_signatures: Mapping[str, str] | None = None,
    ) -> str:
        """Record (in ``stage.json``) that ``stage`` runs with ``config``; returns its fingerprint.

        A stage that is stale for this configuration is cleared first — unless only group
        signatures changed, when just the commits of changed groups are set aside (see
        :meth:`open_stage`); a partial or done one with the same fingerprint is kept, so its
        work continues. Called by process 0.
        """
        expected = self.expected_fingerprint(stage, config, imported, group_signatures)
        reuse = self._reuse_key(stage, config, imported)
        status = self.status(stage, expected=expected)
        if status.state == "stale":
            previous = self.record(stage) or {}
            if group_signatures is not None and previous.get("reuse") == reuse:
                self._keep_unchanged_groups(stage, group_signatures)
            else:
                self.clear(stage)
        if status.state in ("stale", "missing"):
            write_text_atomic(
                self.stage_dir(stage) / "stage.json",
                self._stage_record(stage, config, expected, imported, groups_total),
            )
        return expected

    def _stage_record(
        self, stage: str, config: Mapping[str, Any], expected: str, imported: bool, groups_total: int | None
    ) -> str:
        """The text of ``stage.json`` for a stage begun with ``config`` (fingerprint ``expected``)."""
        record = {
            "stage": stage,
            "fingerprint": expected,
            "reuse": self._reuse_key(stage, config, imported),
            "inputs": {} if imported else self._upstream_fingerprints(stage),
            "imported": imported,
            "config": dict(config),
            "groups_total": groups_total,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        return json.dumps(record, indent=2, default=str) + "\n"

    def begin_shard(
        self,
        stage: str,
        config: Mapping[str, Any],
        group_ids: Sequence[str],
        shard: Shard,
        *,
        imported: bool = False,
        group_signatures: Mapping[str, str] | None = None,
    ) -> str:
        """:meth:`begin` for shard job ``shard``: record the stage if no job has yet, and the
        split in ``shards.json``; returns the fingerprint.

        A shard job never clears anything — other jobs may be writing the stage — so a stage
        recorded with another fingerprint (other settings, a redone upstream stage) raises
        :class:`ShardMismatchError`, and so does a split into another N while a job of that
        split runs. Jobs that start together race to create ``stage.json``; the first one's
        record stands (an exclusive create) and the others compare against it.
        """
        expected = self.expected_fingerprint(stage, config, imported, group_signatures)
        if self.record(stage) is None:
            create_text_exclusive(
                self.stage_dir(stage) / "stage.json",
                self._stage_record(stage, config, expected, imported, len(group_ids)),
            )
        found = (self.record(stage) or {}).get("fingerprint")
        if found != expected:
            raise ShardMismatchError(
                f"shard {shard}: stage {stage!r} of run {self.root} was recorded with other settings or "
                "inputs than this job's (another job started it differently, or an earlier stage was redone "
                "since). Give every shard job the same settings; nothing was written."
            )
        self._record_split(stage, expected, group_ids, shard)
        return expected

    def _record_split(self, stage: str, fingerprint: str, group_ids: Sequence[str], shard: Shard) -> None:
        """Write ``shards.json`` for a split into ``shard.count`` (kept when it says so already)."""
        wanted = {"count": shard.count, "fingerprint": fingerprint, "groups": sorted(group_ids)}
        record = self.shard_record(stage)
        if record == wanted:
            return
        if record is not None and record.get("count") != shard.count:
            running = self.running_shards()
            others = [str(j) for j in running if j.stage == stage and j.shard.count != shard.count]
            if others:
                raise ShardMismatchError(
                    f"shard {shard}: stage {stage!r} of run {self.root} is being filled by shard jobs split "
                    f"into {record.get('count')}, not {shard.count}: {'; '.join(others)}. Give every job the "
                    "same N (groups already done stay done when the split changes once no job runs)."
                )
        write_text_atomic(self.stage_dir(stage) / SHARDS_FILE, json.dumps(wanted) + "\n")

    def _keep_unchanged_groups(self, stage: str, signatures: Mapping[str, str]) -> None:
        """Set aside every commit holding a group whose signature changed (or is gone), and
        the stage's completion: the rest of its work stays committed."""
        commits, damaged = self._scan(stage)
        changed = [
            c.path
            for c in commits
            if not c.signatures or any(c.signatures.get(g) != signatures.get(g) for g in c.groups)
        ]
        set_aside([*changed, *(d.path for d in damaged)], self.stage_dir(stage) / "outdated")
        directory = self.stage_dir(stage)
        (directory / "complete.json").unlink(missing_ok=True)
        (directory / SHARDS_FILE).unlink(missing_ok=True)
        for marker in (directory / "processes").glob("*.json"):
            marker.unlink(missing_ok=True)

    def complete(self, stage: str, fingerprint: str, **facts: Any) -> None:
        """Mark ``stage`` done for ``fingerprint`` (``complete.json``), with facts worth keeping."""
        record = {"fingerprint": fingerprint, **facts, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_text_atomic(
            self.stage_dir(stage) / "complete.json", json.dumps(record, indent=2, default=str) + "\n"
        )

    def completion(self, stage: str) -> dict[str, Any] | None:
        """The ``complete.json`` of a stage that is done, else None."""
        if self.status(stage).state != "done":
            return None
        return _read_json(self.stage_dir(stage) / "complete.json")

    def replace_stage(self, stage: str, staged: RunStore) -> None:
        """Make ``staged``'s finished ``stage`` this run's: the stage folder is renamed into place,
        the old one renamed aside first and deleted after (an import built in a staging folder
        replaces the run's stage only once every part of it is written)."""
        source = staged.stage_dir(stage)
        if staged.status(stage).state != "done":
            raise Dp2oError(f"stage {stage!r} staged in {staged.root} is not finished; nothing was replaced")
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.stage_dir(stage)
        trash = self.root / f".trash-{stage}-{os.getpid()}-{time.time_ns()}"
        if target.is_symlink() or target.exists():
            os.replace(target, trash)
        os.replace(source, target)
        if trash.is_symlink():
            trash.unlink()
        else:
            shutil.rmtree(trash, ignore_errors=True)

    def clear(self, stage: str) -> None:
        """Remove everything ``stage`` wrote (renamed aside first, so readers never see half)."""
        directory = self.stage_dir(stage)
        if directory.is_symlink():  # a later round's link to round 1's data: remove the link only
            directory.unlink()
            return
        if not directory.exists():
            return
        trash = self.root / f".trash-{stage}-{os.getpid()}-{time.time_ns()}"
        os.replace(directory, trash)
        shutil.rmtree(trash, ignore_errors=True)


class StageWriter:
    """Writes one process's share of a stage; made by :meth:`RunStore.open_stage`.

    Inside ``with``: :attr:`todo` lists this process's groups not yet committed;
    :meth:`add_group` buffers a finished group's rows (table name → list of row dicts)
    and commits every ``flush_every`` groups. On a clean exit the process marks its share
    finished; process 0 then waits for the others and marks the stage done. On an error the
    groups already finished are committed, so a rerun continues after them.
    """

    def __init__(
        self,
        store: RunStore,
        stage: str,
        config: dict[str, Any],
        group_ids: list[str],
        process: ProcessInfo,
        flush_every: int,
        wait_timeout: float | None,
        imported: bool = False,
        group_signatures: dict[str, str] | None = None,
    ) -> None:
        duplicates = sorted(g for g, n in Counter(group_ids).items() if n > 1)
        if duplicates:
            raise Dp2oError(f"stage {stage!r}: group ids are not unique: {', '.join(duplicates[:5])}")
        self.store = store
        self.stage = stage
        self.config = config
        self.group_ids = group_ids
        self.process = process
        self.flush_every = max(1, flush_every)
        self.wait_timeout = wait_timeout
        self.imported = imported
        self.group_signatures = group_signatures
        self.directory = store.stage_dir(stage)
        self.todo: list[str] = []
        self.share_total = 0
        self.fingerprint = ""
        self._lock = store.stage_lock(stage, process)
        self._buffer: list[tuple[str, dict[str, list[dict[str, Any]]]]] = []
        self._sequence = 0
        self.committed_groups = 0

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> StageWriter:
        self._lock.__enter__()
        try:
            self.fingerprint = self.store.expected_fingerprint(
                self.stage, self.config, self.imported, self.group_signatures
            )
            if self.process.is_main:
                self._prepare()
            else:
                self._wait_for(
                    lambda: (self.store.record(self.stage) or {}).get("fingerprint") == self.fingerprint,
                    "process 0 to prepare the stage",
                )
            marker = self._marker_path(self.process)
            marker.unlink(missing_ok=True)
            done = self.store.done_groups(self.stage)
            self.share_total = len(self.process.share(self.group_ids))
            self.todo = self.process.share(self.group_ids, done)
            own_folder = self.directory / "parts" / self.process.writer
            # damaged commits too: their sequence numbers are never reused
            own = [commit_sequence(p) for p in own_folder.glob("*/part-*.commit.json")]
            self._sequence = max(own, default=-1) + 1
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        try:
            self.flush()
            if exc_type is None:
                write_text_atomic(
                    self._marker_path(self.process),
                    json.dumps(
                        {
                            "index": self.process.index,
                            "count": self.process.count,
                            "fingerprint": self.fingerprint,
                        }
                    ),
                )
                if self.process.is_main:
                    self._finish()
        finally:
            self._lock.__exit__(None, None, None)

    def _prepare(self) -> None:
        shard = self.process.shard
        if shard is None:
            self.store.begin(
                self.stage,
                self.config,
                groups_total=len(self.group_ids),
                imported=self.imported,
                group_signatures=self.group_signatures,
            )
        else:
            self.store.begin_shard(
                self.stage,
                self.config,
                self.group_ids,
                shard,
                imported=self.imported,
                group_signatures=self.group_signatures,
            )
        self._set_damaged_aside()

    def _set_damaged_aside(self) -> None:
        """Move damaged commits (record and part files) to ``<stage>/damaged/``; their groups
        are redone. Only files of commits that are already damaged are moved — in a shard job,
        only those holding its own groups (other jobs may be redoing theirs)."""
        damaged = self.store.damaged_commits(self.stage)
        mine = self._shard_groups()
        if mine is not None:
            damaged = [d for d in damaged if self._holds_own_groups(d.path, mine)]
        if damaged:
            set_aside([d.path for d in damaged], self.directory / "damaged")
        for mark in (self.directory / "damaged").glob("group-*.json"):
            if mine is None or (_read_json(mark) or {}).get("group") in mine:
                mark.unlink(missing_ok=True)

    def _shard_groups(self) -> set[str] | None:
        """The groups of this job's shard (None when this is no shard job)."""
        shard = self.process.shard
        return None if shard is None else set(shard.owns(sorted(self.group_ids)))

    def _holds_own_groups(self, record: Path, mine: set[str]) -> bool:
        """Whether a damaged commit holds a group of this shard (one whose record is unreadable:
        whether this shard's job wrote it)."""
        commit, _ = read_commit(record)
        if commit is None:
            shard = self.process.shard
            return shard is not None and record.parent.parent.name.startswith(shard.tag)
        return any(g in mine for g in commit.groups)

    def _finish(self) -> None:
        """Process 0: wait for this job's processes; then mark the stage done when every group
        is committed. In a shard job other shards may still be missing: the stage stays partial
        (the job finishing the last of them marks it, or :meth:`RunStore.status` finds it so)."""
        count, shard = self.process.count, self.process.shard
        writers = [ProcessInfo(index, count, shard) for index in range(count)]

        def all_finished() -> bool:
            for writer in writers:
                marker = _read_json(self._marker_path(writer))
                if (
                    not marker
                    or marker.get("fingerprint") != self.fingerprint
                    or marker.get("count") != self.process.count
                ):
                    return False
            return True

        self._wait_for(all_finished, f"all {self.process.count} processes to finish their share")
        missing = set(self.group_ids) - self.store.done_groups(self.stage)
        if missing and self.process.shard is not None:
            own = missing & (self._shard_groups() or set())
            if own:
                raise Dp2oError(
                    f"shard {shard} of stage {self.stage!r}: its processes finished but {len(own)} of its "
                    f"groups are not committed (e.g. {sorted(own)[0]!r}); run the shard job again"
                )
            return
        if missing:
            raise Dp2oError(
                f"stage {self.stage!r}: every process finished but {len(missing)} groups are not committed "
                f"(e.g. {sorted(missing)[0]!r}); run the stage again to complete it"
            )
        self.store.complete(self.stage, self.fingerprint, groups=len(self.group_ids))

    def _wait_for(self, condition: Callable[[], bool], what: str) -> None:
        start = time.monotonic()
        while not condition():
            if self.wait_timeout is not None and time.monotonic() - start > self.wait_timeout:
                raise Dp2oError(
                    f"stage {self.stage!r}: gave up after {self.wait_timeout:.0f} s waiting for {what}"
                )
            time.sleep(0.2)

    def _marker_path(self, process: ProcessInfo) -> Path:
        """Where ``process`` (of this job) says it finished its share."""
        return self.directory / "processes" / f"{process.writer}.json"

    # -- rows ----------------------------------------------------------------------------
    def add_group(self, group_id: str, **tables: Iterable[Mapping[str, Any]]) -> None:
        """Buffer one finished group's rows; committed with the next flush."""
        self._buffer.append((group_id, {name: [dict(row) for row in rows] for name, rows in tables.items()}))
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def add_block(self, group_ids: Sequence[str], **tables: Any) -> None:
        """Commit many finished groups at once from pyarrow Tables (one per table name,
        each with a ``group_id`` column): the columnar path for stages with millions of
        rows, which never become Python dicts. Buffered groups are committed first."""
        self.flush()
        if group_ids:
            self._commit(list(group_ids), {name: _cast(name, table) for name, table in tables.items()})

    def flush(self) -> None:
        """Commit the buffered groups: part files first, then the commit record."""
        if not self._buffer:
            return
        merged: dict[str, list[dict[str, Any]]] = {}
        for group_id, tables in self._buffer:
            for name, rows in tables.items():
                for row in rows:
                    row.setdefault("group_id", group_id)
                merged.setdefault(name, []).extend(rows)
        groups = [group_id for group_id, _ in self._buffer]
        self._commit(groups, {name: to_arrow(name, rows) for name, rows in merged.items()})
        self._buffer.clear()

    def _commit(self, groups: list[str], tables: Mapping[str, Any]) -> None:
        """Write each table's part file, then the commit record naming them and ``groups``."""
        import pyarrow.parquet as pq

        folder = self.directory / "parts" / self.process.writer / f"{self._sequence // PARTS_PER_FOLDER:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"part-{self._sequence:07d}"
        files, counts, sizes = {}, {}, {}
        for name, table in tables.items():
            file_name = f"{stem}.{name}.parquet"
            with atomic_path(folder / file_name) as tmp:
                pq.write_table(table, tmp)
                sizes[name] = tmp.stat().st_size
            files[name], counts[name] = file_name, table.num_rows
        record: dict[str, Any] = {"groups": groups, "tables": files, "rows": counts, "bytes": sizes}
        if self.group_signatures is not None:
            record["signatures"] = {g: self.group_signatures[g] for g in groups}
        write_text_atomic(folder / f"{stem}.commit.json", json.dumps(record) + "\n")
        self.committed_groups += len(groups)
        self._sequence += 1


#: The columns of each stage's tables that name files in the run (checked by verify_files).
_FILE_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "data": {"groups": ("lr", "hr")},
    "sample": {"candidates": ("image", "latent_shard")},
}

#: The command that reruns a stage on its own.
_COMMAND = {"data": "prepare", "sample": "sample", "score": "score", "pairs": "pairs", "train": "train"}


def _with_signatures(base: str, group_signatures: Mapping[str, str] | None) -> str:
    """A stage's fingerprint from its reuse key and its groups' signatures (if it has any)."""
    if group_signatures is None:
        return base
    return fingerprint({"base": base, "groups": sorted(group_signatures.items())})


def _cast(name: str, table: Any) -> Any:
    """``table`` with the known schema of ``name`` (columns in order, types cast)."""
    schema = arrow_schema(name)
    if schema is None:
        return table
    extra = set(table.column_names) - set(schema.names)
    if extra:
        raise ValueError(f"table {name!r} has no columns {sorted(extra)}")
    return table.select(schema.names).cast(schema)


def _looks_damaged(error: BaseException) -> bool:
    """Whether a loader's error says the file itself is bad (not, e.g., out of memory)."""
    from dp2o_core.imageio import BadImageError

    return isinstance(error, BadImageError | OSError | ValueError | EOFError) or type(error).__name__ in (
        "SafetensorError",
        "ArrowInvalid",
    )


def safe_name(group_id: str) -> str:
    """A file-name-safe, readable form of a group id, distinct for distinct ids.

    Letters, digits, ``.``, ``_`` and ``-`` stay as they are; every other character
    (``/``, spaces, ``%``, non-ASCII) is percent-encoded from its UTF-8 bytes, and so is a
    leading dot (no hidden files, no ``.``/``..``). The encoding is reversible, so two ids
    never share a name: ``img 7`` → ``img%207`` but ``img_7`` stays ``img_7``. Names
    longer than 120 characters keep their first 80 and append the SHA-256 of the id.
    """
    name = "".join(
        char if _SAFE_CHAR.fullmatch(char) else "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))
        for char in group_id
    )
    if name.startswith("."):
        name = "%2E" + name[1:]
    if not name:
        name = "%"  # the empty id: '%' alone is no encoding of any other id
    if len(name) > 120:
        name = name[:80] + "-" + hashlib.sha256(group_id.encode("utf-8")).hexdigest()
    return name


_SAFE_CHAR = re.compile(r"[A-Za-z0-9._-]")


def _bucket(group_id: str) -> str:
    return hashlib.sha1(group_id.encode("utf-8")).hexdigest()[:2]


def _check_stage(stage: str) -> None:
    if stage not in KNOWN_STAGES:
        from dp2o_core.errors import UnknownNameError

        raise UnknownNameError("stage", stage, KNOWN_STAGES)


def _missing_output(root: Path, complete: Mapping[str, Any] | None) -> bool:
    """Whether a finished stage's recorded result folder (``weights``: the tuned model) is gone
    or empty: one ``stat`` and one directory read, cheap enough for every status."""
    weights = (complete or {}).get("weights")
    if not isinstance(weights, str):
        return False
    folder = root / weights
    try:
        return not any(folder.iterdir())
    except OSError:
        return True


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _mtime(path: Path) -> str | None:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(path.stat().st_mtime))
    except OSError:
        return None
