"""Atomic file writes: write to a temporary file beside the target, then rename it in place.

A reader never sees a half-written file under the final name, whatever kills the writer.
The file gets the permissions a plain ``open(path, "w")`` would give it (0666 less the
process umask), not the owner-only 0600 of a temporary file, so a run directory on a
shared cluster is as readable as the umask allows.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is synced and renamed to ``path``."""
    path = Path(path)
    with _temporary_beside(path) as tmp:
        yield tmp
        _finish(tmp)
        os.replace(tmp, path)


@contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    """An empty temporary file in ``path``'s folder (made if needed), removed when the block
    ends unless the block moved it to its final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _finish(tmp: Path) -> None:
    """Give a written temporary file the umask's mode and sync it to disk."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        # after the write: some writers (safetensors) replace the file with an 0600 one
        os.fchmod(fd, 0o666 & ~process_umask())
        os.fsync(fd)
    finally:
        os.close(fd)


def writable_problem(path: Path | str) -> str | None:
    """Why ``path`` cannot be written atomically (it is a folder, or its folder — or the nearest
    one that exists, for a folder still to be made — cannot take a new file), else None.
    Checked before long work whose result goes there."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder"
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
    except OSError as error:
        return f"cannot create a file in {folder} ({error.strerror or error})"
    os.close(fd)
    os.unlink(probe)
    return None


def follow_umask(folder: Path | str) -> None:
    """Give every file under ``folder`` the mode ``open(path, "w")`` would (0666 less the
    umask): for folders written by libraries that create owner-only files (safetensors
    writes 0600 files, so do accelerate and diffusers through it)."""
    mode = 0o666 & ~process_umask()
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def process_umask() -> int:
    """The process's file-creation mask (read without changing it where Linux allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def create_text_exclusive(path: Path | str, text: str) -> bool:
    """Write ``text`` to ``path`` only if no file is there: complete or not at all, and of two
    writers racing (jobs on two hosts sharing a file system) exactly one wins. Returns whether
    this call created it. A hard link of a finished temporary file is the atomic create-if-
    absent that network file systems also honour (``O_EXCL`` is not reliable on old NFS)."""
    path = Path(path)
    with _temporary_beside(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        _finish(tmp)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
