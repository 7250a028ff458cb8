"""Where training checkpoints live, which are complete and which can be loaded, and what a
training stage (``train``, ``pretrain``) has done: its steps and its JSON-lines records.

A checkpoint is ``<train>/checkpoints/step-NNNNNN/``; the trainer writes it under a
staging name and renames it into place, and ``position.json`` inside is written last.
Listing them needs no torch (``dp2o status`` reads it); :func:`checkpoint_problem` opens
every file a resume would load, without running any code stored in them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from dp2o_core.errors import short_reason
from dp2o_core.weightfiles import safetensors_problem

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


#: Files in a checkpoint's ``state/`` folder that a resume never loads: accelerate's pickled
#: custom objects (loading them can run arbitrary code; dp2o keeps its schedule in JSON).
UNSAFE_STATE_FILES = "custom_checkpoint_*.pkl"


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be resumed from, or None when it can.

    Checks ``position.json`` and ``schedule.json``, the header and length of every
    safetensors file, and that every pickled state file (optimizer, random states, scaler)
    loads with ``weights_only=True`` (memory-mapped, so a large optimizer state is not read
    twice). A truncated, emptied or planted file is reported here, before any of the
    checkpoint is applied to the model.
    """
    path = Path(path)
    try:
        position = json.loads((path / "position.json").read_text(encoding="utf-8"))
        int(position["step"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"position.json is unreadable ({short_reason(error)})"
    state = path / "state"
    if not state.is_dir():
        return "its state/ folder is missing"
    schedule = state / "schedule.json"
    if schedule.exists():
        try:
            json.loads(schedule.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            return f"state/schedule.json is unreadable ({short_reason(error)})"
    for file in sorted(state.iterdir()):
        if file.match(UNSAFE_STATE_FILES):
            continue
        if file.suffix == ".safetensors":
            problem = safetensors_problem(file)
        elif file.suffix in (".bin", ".pkl", ".pt"):
            problem = _pickle_problem(file)
        else:
            continue
        if problem:
            return f"state/{file.name} {problem}"
    return None


def _pickle_problem(file: Path) -> str | None:
    """A pickled state file that does not load as plain tensors and containers."""
    from accelerate.utils import load

    try:
        load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001 - any failure means a resume cannot load it
        return f"does not load safely ({short_reason(error)})"
    return None


def steps_progress(store: Any, stage: str) -> tuple[int, int | None]:
    """(steps a rerun would not redo, max_steps) of a training stage (``train``, ``pretrain``):
    the final step once done, else the newest checkpoint's; max_steps from the stage's recorded
    settings section of the same name."""
    record = store.record(stage) or {}
    total = record.get("config", {}).get(stage, {}).get("max_steps")
    completion = store.completion(stage)
    if completion is not None:
        return int(completion.get("steps", 0)), total
    found = complete_checkpoints(store.stage_dir(stage) / "checkpoints")
    return (found[-1][0] if found else 0), total


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file a trainer appends to (``metrics.jsonl``,
    ``validation.jsonl``); none when it is missing, and a line cut short by a killed process is
    skipped."""
    records = []
    if Path(path).exists():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records
