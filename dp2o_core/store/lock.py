"""Advisory locks: one writing command per run (``locks/run.lock``, held by its process 0), and
one writer per stage and writer folder (held for the stage's lifetime).

``fcntl.flock`` is released by the kernel when the holder exits, however it exits, so a
killed run never leaves a lock that blocks the next one on the same machine. A lock held
exclusively stores the holder's pid, host and start time for the error message. Shard jobs
(``--shard K/N``) hold the run lock *shared* — any number of them fill one run together,
while a command that needs the run to itself waits for none of them and is refused — and
each holds its own shard's stage lock exclusively.

On a network file system the locks need its lock support (NFSv4, Lustre mounted with
``flock``, GPFS); a file system without it is reported, not ignored.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from dp2o_core.errors import Dp2oError

#: How long a lock that is taken is tried again before giving up: a ``dp2o status`` that is
#: probing whether a shard job runs holds the lock for microseconds.
CONTENTION_RETRY_SECONDS = 1.0


class StageLockedError(Dp2oError):
    """Another process writes this run directory (or this stage of it) now."""


class StageLock:
    """Context manager: lock on ``path`` (exclusive, or ``shared``) or :class:`StageLockedError`.

    ``holders`` describes who holds a lock that is held shared (the shard jobs), for the
    message when an exclusive attempt fails.
    """

    def __init__(
        self,
        path: Path,
        what: str,
        *,
        shared: bool = False,
        holders: Callable[[], list[str]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.what = what
        self.shared = shared
        self.holders = holders
        self._fd: int | None = None

    def __enter__(self) -> StageLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask
        mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        if not _try_lock(fd, mode, self.path):
            holder = self._describe_holder(fd)
            os.close(fd)
            raise StageLockedError(
                f"{self.what} is being written by another dp2o process ({holder}). Wait for it to "
                f"finish. If no such process runs (for example its machine died while the run "
                f"directory sits on a network file system), delete {self.path} and run again."
            )
        os.ftruncate(fd, 0)  # shared: no one holder to name (an earlier exclusive one's record goes)
        if not self.shared:
            os.write(fd, json.dumps(holder_record()).encode())
            os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _describe_holder(self, fd: int) -> str:
        holder = read_holder(fd)
        if holder is None and self.holders is not None:
            jobs = self.holders()
            if jobs:
                return "shard jobs: " + "; ".join(jobs)
        return holder or "holder unknown"


def holder_record() -> dict[str, object]:
    """What a lock holder writes into its lock file: pid, host and since when."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def probe_holder(path: Path) -> str | None:
    """Who holds the exclusive lock ``path`` now (``pid 12 on host n7 since …``), or None when
    nobody does (or the file is gone). Takes the lock for an instant when it is free."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_holder(fd) or "holder unknown"
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _try_lock(fd: int, mode: int, path: Path) -> bool:
    """Take the lock, retrying briefly while it is taken; False when it stays taken."""
    import fcntl

    deadline = time.monotonic() + CONTENTION_RETRY_SECONDS
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        except OSError as error:
            if error.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                os.close(fd)
                raise Dp2oError(
                    f"the file system of {path} does not support file locks ({error.strerror}); dp2o "
                    "needs them to keep jobs that share a run apart. Put the run on a file system with "
                    "lock support (NFSv4, Lustre mounted with -o flock, GPFS, a local disk)."
                ) from None
            raise


def read_holder(fd: int) -> str | None:
    """The holder a lock file records, or None when it records none (held shared, or empty)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        record = json.loads(os.read(fd, 4096).decode() or "null")
        if record is None:
            return None
        return f"pid {record['pid']} on host {record['host']} since {record['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
