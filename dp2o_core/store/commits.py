"""Commit records: reading them, checking that their part files are intact, setting aside.

A commit record (``part-<seq>.commit.json``) names the groups of one batch and the part
file of each table it wrote, with each file's row count and size. A record that does not
parse, or whose part files are missing or not the size recorded, is *damaged*: its groups
do not count as done, and a rerun moves it and its parts aside and redoes them.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dp2o_core.errors import Dp2oError, short_reason

COMMIT_PATTERN = re.compile(r"part-(\d+)\.commit\.json$")


def commit_sequence(path: Path) -> int:
    """The sequence number in a commit record's name (``part-000042.commit.json`` → 42)."""
    match = COMMIT_PATTERN.search(path.name)
    if match is None:
        raise ValueError(f"{path.name} is not a commit record's name")
    return int(match.group(1))


@dataclass(frozen=True)
class Commit:
    """One committed batch of groups and the part file of each table."""

    path: Path
    #: the folder of the process that wrote it (``p001``, or ``s003-008.p000`` for a shard job)
    writer: str
    sequence: int
    groups: tuple[str, ...]
    tables: dict[str, str]
    rows: dict[str, int]
    sizes: dict[str, int] | None = None  #: bytes of each part file (None: written before dp2o recorded them)
    signatures: dict[str, str] | None = None  #: group id → its inputs' signature, where the stage has them


class DamagedStageError(Dp2oError):
    """A file a finished stage wrote is missing or unreadable; a rerun of the stage redoes it."""


@dataclass(frozen=True)
class DamagedCommit:
    """A commit record that cannot be trusted, and why."""

    path: Path
    problem: str


def read_commit(path: Path) -> tuple[Commit | None, str]:
    """The commit record at ``path``, or None and what is wrong with it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        sizes = data.get("bytes")
        commit = Commit(
            path=path,
            writer=path.parent.parent.name,
            sequence=commit_sequence(path),
            groups=tuple(str(g) for g in data["groups"]),
            tables={str(k): str(v) for k, v in data["tables"].items()},
            rows={str(k): int(v) for k, v in data.get("rows", {}).items()},
            sizes={str(k): int(v) for k, v in sizes.items()} if sizes is not None else None,
            signatures={str(k): str(v) for k, v in data["signatures"].items()}
            if "signatures" in data
            else None,
        )
    except FileNotFoundError:
        return None, "it was removed"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return None, f"the commit record is unreadable ({short_reason(error)})"
    return commit, ""


def parts_problem(commit: Commit) -> str:
    """What is wrong with the part files a commit names ('' when nothing is)."""
    sizes = commit.sizes
    for table, name in commit.tables.items():
        part = commit.path.parent / name
        try:
            size = part.stat().st_size
        except FileNotFoundError:
            return f"its part file {name} is missing"
        except OSError as error:
            return f"its part file {name} cannot be read ({error.strerror})"
        if sizes is not None and table in sizes:
            if size != sizes[table]:
                return f"its part file {name} is {size} bytes, written as {sizes[table]}"
        else:  # written before sizes were recorded: compare the row count in the footer
            import pyarrow.parquet as pq

            try:
                rows = pq.read_metadata(part).num_rows
            except Exception as error:  # noqa: BLE001 - any unreadable footer
                return f"its part file {name} is unreadable ({short_reason(error)})"
            if table in commit.rows and rows != commit.rows[table]:
                return f"its part file {name} holds {rows} rows, committed as {commit.rows[table]}"
    return ""


def set_aside(commit_records: Sequence[Path], folder: Path) -> None:
    """Move commit records and their part files to ``folder/<time>/<writer>/<nnnn>/``."""
    if not commit_records:
        return
    aside = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}"
    for record in commit_records:
        stem = record.name[: -len(".commit.json")]
        target = aside / record.parent.parent.name / record.parent.name
        target.mkdir(parents=True, exist_ok=True)
        for file in record.parent.glob(f"{stem}.*"):
            if not file.name.endswith(".tmp"):
                os.replace(file, target / file.name)
