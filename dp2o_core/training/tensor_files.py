"""Read rows of safetensors files straight into a batch's tensors.

A micro-batch of SD2 pairs needs a 3 × 512 × 512 float32 condition (3 MB) per pair and a
row of a latent file per candidate. ``safetensors``' own readers map the file and hand back
a tensor that must then be copied into the batch (``torch.cat``), and touching mapped pages
costs a fault per 4 KiB; at thousands of pairs a second that was most of the time. Here the
file's header is parsed (8 bytes of length, then JSON: each tensor's dtype, shape and byte
range — the format's specification) and ``os.preadv`` reads the bytes directly into the
batch tensor's memory: one copy, from the page cache.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class Entry:
    """One tensor of a file: its dtype, shape and where its bytes start."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int

    @property
    def row_bytes(self) -> int:
        """Bytes of one index along the first dimension."""
        count = 1
        for size in self.shape[1:]:
            count *= size
        return count * self.dtype.itemsize


class TensorFile:
    """An open safetensors file: its tensors' entries and an fd for reading rows."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDONLY)
        try:
            self.entries = _read_header(self.fd, self.path)
        except BaseException:
            os.close(self.fd)
            raise

    def read_rows(self, name: str, first: int, out: torch.Tensor) -> None:
        """Rows ``first`` … ``first + len(out) - 1`` of tensor ``name`` into ``out`` (a
        contiguous tensor of the file's dtype and row shape)."""
        entry = self.entries[name]
        if out.dtype != entry.dtype or tuple(out.shape[1:]) != entry.shape[1:] or not out.is_contiguous():
            raise ValueError(
                f"{self.path}: {name} is {entry.dtype} {entry.shape}, not {out.dtype} {tuple(out.shape)}"
            )
        if first < 0 or first + len(out) > entry.shape[0]:
            raise ValueError(f"{self.path}: {name} has {entry.shape[0]} rows, not {first + len(out)}")
        buffer = memoryview(out.view(torch.uint8).numpy()).cast("B") if out.numel() else memoryview(b"")
        offset, done = entry.start + first * entry.row_bytes, 0
        while done < len(buffer):
            count = os.preadv(self.fd, [buffer[done:]], offset + done)
            if count == 0:
                raise OSError(f"{self.path} ends before the bytes of {name} (truncated file)")
            done += count

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> TensorFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_header(fd: int, path: Path) -> dict[str, Entry]:
    size_bytes = os.pread(fd, 8, 0)
    if len(size_bytes) != 8:
        raise OSError(f"{path} is not a safetensors file (shorter than its header)")
    size = int.from_bytes(size_bytes, "little")
    try:
        header = json.loads(os.pread(fd, size, 8))
    except ValueError:
        raise OSError(f"{path} is not a safetensors file (its header is not JSON)") from None
    entries = {}
    for name, record in header.items():
        if name == "__metadata__":
            continue
        entries[name] = Entry(
            DTYPES[record["dtype"]], tuple(record["shape"]), 8 + size + record["data_offsets"][0]
        )
    return entries
