"""Stable digests of configurations and inputs, and seeds derived from names."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def fingerprint(value: Any) -> str:
    """A 16-hex-digit digest of a JSON-serialisable value, independent of key order."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_signature(path: Path | None) -> tuple[str, int, int] | None:
    """(path, size, modification time in ns) — enough to notice a changed input file."""
    if path is None:
        return None
    try:
        stat = Path(path).stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path), stat.st_size, stat.st_mtime_ns)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from a run seed and names (e.g. an item id): same parts, same seed."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1
