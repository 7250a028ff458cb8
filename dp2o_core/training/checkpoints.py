"""Where training checkpoints live and which are complete (no torch: ``dp2o status`` reads it).

A checkpoint is ``<train>/checkpoints/step-NNNNNN/``; the trainer writes it under a
staging name and renames it into place, and ``position.json`` inside is written last.
"""

from __future__ import annotations

import re
from pathlib import Path

_NAME = re.compile(r"step-(\d{6,})")


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint taken after ``step`` steps."""
    return f"step-{step:06d}"


def complete_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint under ``folder``, oldest first."""
    found = []
    for path in Path(folder).glob("step-*"):
        match = _NAME.fullmatch(path.name)
        if match and (path / "position.json").exists():
            found.append((int(match.group(1)), path))
    return sorted(found)
