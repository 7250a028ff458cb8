"""Whether a weight file is whole, read from its header alone (no tensor is loaded).

A safetensors file is 8 bytes of header length, a JSON header naming each tensor's byte range,
then the tensors: its length is known from the header, so a file cut short by a failed copy
or download is found in microseconds whatever its size. Used by the preflight (a backbone's
model folder, a ControlNet file) and before a training checkpoint is applied.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

#: Larger headers than this are not headers (a safetensors header lists names and offsets).
MAX_HEADER_BYTES = 100 << 20


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (cut short, longer than its header says,
    not safetensors, unreadable), or None when it is whole."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            head = file.read(8)
            if len(head) < 8:
                return f"is {size} bytes: not a safetensors file (truncated?)"
            (length,) = struct.unpack("<Q", head)
            if length > min(size - 8, MAX_HEADER_BYTES):
                return "is not a safetensors file (its header length is impossible; truncated?)"
            header = json.loads(file.read(length))
        ends = [
            int(entry["data_offsets"][1])
            for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict)
        ]
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, IndexError, AttributeError):
        return "is not a safetensors file (its header is not a safetensors header)"
    expected = 8 + length + max(ends, default=0)
    if size < expected:
        return f"is truncated: {size} bytes of the {expected} its header describes"
    if size > expected:
        return f"is {size} bytes but its header describes {expected}"
    return None


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape, from the header of a whole safetensors file (check it
    with :func:`safetensors_problem` first): what a state dict is, without loading it."""
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
    return {
        key: tuple(int(n) for n in entry["shape"])
        for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict)
    }
