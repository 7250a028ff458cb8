"""The framing dp2o and its worker processes talk in (metric workers, tagger workers).

Every message is frames of an 8-byte big-endian length and that many bytes: a JSON header,
then arrays as ``.npy`` frames (``allow_pickle=False``). Before its first reply a worker writes
:data:`HELLO` on the protocol stream, so dp2o can skip whatever the interpreter printed first.

This module imports only the standard library (numpy when arrays are converted): the worker
scripts run under other interpreters, without dp2o installed, and load it from this folder.
"""

from __future__ import annotations

import io
import struct

#: What a worker writes first on the protocol stream (dp2o skips anything before it).
HELLO = b"\x00DP2O-METRIC-WORKER/1\n"


def read_frame(stream) -> bytes | None:
    """One frame, or None at the end of the stream."""
    head = stream.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack(">Q", head)
    data = stream.read(size)
    if len(data) < size:
        return None
    return data


def write_frame(stream, data: bytes) -> None:
    """One frame."""
    stream.write(struct.pack(">Q", len(data)) + data)


def array_bytes(array) -> bytes:
    """An array as ``.npy`` bytes."""
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def bytes_array(data: bytes):
    """``.npy`` bytes as an array."""
    import numpy as np

    return np.load(io.BytesIO(data), allow_pickle=False)
