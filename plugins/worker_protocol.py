"""The framing dp2o and its worker processes talk in (metric workers, tagger workers).

Every message is frames of an 8-byte big-endian length and that many bytes: a JSON header,
then arrays as ``.npy`` frames (``allow_pickle=False``). Before its first reply a worker writes
:data:`HELLO` on the protocol stream, so dp2o can skip whatever the interpreter printed first.

This module imports only the standard library (numpy when arrays are converted): the worker
scripts run under other interpreters, without dp2o installed, and load it from this folder.
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
from collections.abc import Callable
from typing import Any

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


#: A worker's request handler: (request header, its arrays) → (reply header, reply arrays).
Handler = Callable[[dict, list], "tuple[dict, list]"]


def serve(handle: Handler, arrays_in: Callable[[dict], int]) -> None:
    """Serve requests on stdin until it ends, as every worker does: :data:`HELLO` first, library
    prints moved to stderr (the protocol owns stdout), ``arrays_in(request)`` array frames read
    after each request header, and any exception of ``handle`` answered as
    ``{"ok": false, "error": "Type: message"}``."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    protocol.write(HELLO)
    protocol.flush()
    requests = sys.stdin.buffer

    def reply(header: dict, arrays: list[Any]) -> None:
        write_frame(protocol, json.dumps(header).encode("utf-8"))
        for array in arrays:
            write_frame(protocol, array_bytes(array))
        protocol.flush()

    while True:
        frame = read_frame(requests)
        if frame is None:
            return
        request = json.loads(frame)
        arrays = [bytes_array(read_frame(requests) or b"") for _ in range(arrays_in(request))]
        try:
            reply(*handle(request, arrays))
        except Exception as error:  # noqa: BLE001 - every failure goes back to dp2o with its text
            reply({"ok": False, "error": f"{type(error).__name__}: {error}"}, [])
