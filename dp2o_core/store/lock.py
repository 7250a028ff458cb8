"""Advisory locks: one writing command per run (``locks/run.lock``, held by its process 0), and
one writer per stage and process slot (held for the stage's lifetime).

``fcntl.flock`` is released by the kernel when the holder exits, however it exits, so a
killed run never leaves a lock that blocks the next one on the same machine. The lock
file holds the holder's pid, host and start time for the error message.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from dp2o_core.errors import Dp2oError


class StageLockedError(Dp2oError):
    """Another process writes this run directory (or this stage of it) now."""


class StageLock:
    """Context manager: exclusive lock on ``path`` or :class:`StageLockedError`."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> StageLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StageLockedError(
                f"{self.what} is being written by another dp2o process ({holder}). Wait for it to "
                f"finish. If no such process runs (for example its machine died while the run "
                f"directory sits on a network file system), delete {self.path} and run again."
            ) from None
        os.ftruncate(fd, 0)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        record = json.loads(os.read(fd, 4096).decode() or "{}")
        return f"pid {record['pid']} on host {record['host']} since {record['since']}"
    except (OSError, ValueError, KeyError):
        return "holder unknown"
