"""Readiness checks that run before any stage does work: fail in seconds, not after sampling.

Each component can say what it needs to run — weight files, a model in the Hugging Face
cache, Python packages — through the classmethod
:meth:`~dp2o_core.interfaces.base.Implementation.readiness`, which must stay cheap: it looks
for files and imports modules, it never loads a network. The pipeline adds what no component
knows (a data set with items, free disk for the candidates) and, before the first stage
writes anything, reports every problem at once (:class:`NotReadyError`, exit status 2).
``dp2o check`` prints the same checks as a table.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from dp2o_core.errors import UsageError

#: present — found; download — missing here but fetched on first use (online);
#: missing — needed and not obtainable here (what stops a run)
Status = Literal["present", "download", "missing"]


@dataclass(frozen=True)
class Check:
    """One thing a component needs, and whether it is there."""

    #: who needs it: "backbone sd2-controlnet", "reward hybrid: lpips", "data", "disk"
    component: str
    #: what it is: "weight file LPIPS_v0.1_alex-df73285e.pth", "Python package icecream"
    item: str
    status: Status
    #: what is wrong (empty when present)
    problem: str = ""
    #: how to get it: a command, where to put the file
    fix: str = ""
    #: where it comes from: a URL or a Hugging Face repository
    source: str = ""
    #: bytes to download, when known
    size: int | None = None

    @property
    def ok(self) -> bool:
        """True unless the item is missing for good."""
        return self.status != "missing"

    def as_record(self) -> dict[str, Any]:
        """JSON-ready form (``dp2o check --json``)."""
        return {**asdict(self), "ok": self.ok}


class NotReadyError(UsageError):
    """Something a run needs is missing: every problem, with its fix, in one message."""

    def __init__(self, checks: list[Check]) -> None:
        self.checks = checks
        lines = [f"{len(checks)} thing(s) this run needs are missing; nothing was written to the run:"]
        for check in checks:
            line = f"- {check.component}: {check.item} — {check.problem}"
            if check.fix:
                line += f". Fix: {check.fix}"
            lines.append(line)
        lines.append("`dp2o check` with the same flags lists every requirement and its source.")
        super().__init__("\n".join(lines))


def component_checks(resolved: Any) -> list[Check]:
    """The readiness of one resolved component (:class:`~dp2o_core.specs.Resolved`)."""
    return list(resolved.registration.cls.readiness(resolved.options))


def dataset_check(who: str, spec: str, list_items: Callable[[], Sequence[Any]]) -> Check:
    """Whether the data set's ``list_items()`` gives at least one item."""
    from dp2o_core.errors import Dp2oError

    try:
        items = list_items()
    except Dp2oError as error:
        return Check(who, f"data set {spec}", "missing", problem=str(error), fix="check the data spec")
    if not items:
        return Check(who, f"data set {spec}", "missing", problem="it lists no images", fix="check its path")
    return Check(who, f"data set {spec} ({len(items)} items)", "present")


def ensure(checks: list[Check]) -> None:
    """Raise :class:`NotReadyError` when any check is missing."""
    problems = [check for check in checks if not check.ok]
    if problems:
        raise NotReadyError(problems)


def free_disk_check(folder: Path, needed: int, what: str) -> Check:
    """Whether the file system holding ``folder`` (or its nearest existing parent) has ``needed`` bytes."""
    existing = Path(folder).resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    item = f"{format_size(needed)} free disk for {what}"
    if free >= needed:
        return Check("disk", item, "present")
    return Check(
        "disk",
        item,
        "missing",
        problem=f"only {format_size(free)} free on the file system of {existing}",
        fix="free space, or put the run on a larger disk (--run DIR)",
    )


def format_size(size: int | None) -> str:
    """``1.5 GB`` style, or ``?`` when unknown."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
