"""Exceptions that carry a message a person can act on.

The CLI prints ``Error: <message>`` for every :class:`Dp2oError` and exits with its
``exit_code`` — 2 for usage errors (a wrong option, an unknown name), 75 for work that
cannot start *yet* (a shard job whose input other shard jobs are still making; 75 is
``EX_TEMPFAIL``, "try again later"), 1 for failures — without a traceback. Library users
catch them like any exception.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable


class Dp2oError(Exception):
    """A failure dp2o can explain; the CLI exits with status 1."""

    exit_code = 1


class UsageError(Dp2oError):
    """The user asked for something that cannot work as given; the CLI exits with status 2."""

    exit_code = 2


class NotYetError(Dp2oError):
    """What this command needs is being made by other jobs and is not finished yet: running it
    again later will work (exit status 75, ``EX_TEMPFAIL``, so a job script can wait and retry)."""

    exit_code = 75


class UnknownNameError(UsageError):
    """A name (implementation, option, kind) that is not among the available ones."""

    def __init__(self, what: str, given: str, available: Iterable[str], hint: str = "") -> None:
        choices = sorted(set(available))
        self.given = given
        self.available = choices
        message = f"unknown {what} {given!r}."
        close = did_you_mean(given, choices)
        if close:
            message += f" Did you mean {close!r}?"
        message += f" Available: {', '.join(choices) if choices else '(none)'}."
        if hint:
            message += f" {hint}"
        super().__init__(message)


class PluginError(Dp2oError):
    """A plugin could not be loaded or is ambiguous; names the distribution at fault."""


def did_you_mean(given: str, choices: Iterable[str]) -> str | None:
    """The closest of ``choices`` to ``given``, or None when nothing is close."""
    matches = difflib.get_close_matches(given, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def short_reason(error: BaseException) -> str:
    """An exception as one line of at most 160 characters, for messages that quote it
    (a :class:`~dp2o_core.imageio.BadImageError` gives its ``reason``)."""
    text = " ".join(str(getattr(error, "reason", None) or error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def explain_os_error(error: OSError) -> str:
    """One line a person can act on for a failed file operation: the file, what went
    wrong, and what to do (a full disk and a read-only run say how to continue)."""
    import errno
    import shutil
    from pathlib import Path

    target = error.filename if error.filename is not None else "a file"
    what = error.strerror or type(error).__name__
    if error.errno == errno.ENOSPC:
        free = ""
        with contextlib.suppress(OSError, TypeError, ValueError):
            folder = Path(str(error.filename)).parent if error.filename else Path.cwd()
            while not folder.exists():
                folder = folder.parent
            free = f" ({shutil.disk_usage(folder).free / 2**30:.1f} GiB free now)"
        return (
            f"the disk is full: writing {target} failed{free}. Free some space (or move the run "
            "elsewhere) and run the same command again: finished work is kept and the interrupted "
            "stage continues."
        )
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (
            f"cannot write {target}: {what}. Run dp2o where it may write (a copy of the run, or "
            "another --run folder); reading commands such as dp2o status work on read-only runs."
        )
    return f"{what}: {target}"
