"""dp2o's side of a worker process (:mod:`dp2o_plugins.worker_protocol`).

:class:`WorkerProcess` starts ``PYTHON SCRIPT`` and exchanges requests and replies with it;
:class:`MetricWorker` is the one of :mod:`dp2o_plugins.rewards.metric_worker`: it asks the
worker to create the metric and sends it each group's candidates. A worker that exits, answers
with an error or is silent for longer than the timeout is stopped, and the error names what it
serves, the interpreter and the last lines it wrote to stderr. Nothing of the group is stored
then, so a rerun scores that group again (the score stage resumes per group).

Replies are not trusted: a frame may claim at most :data:`MAX_FRAME` bytes, a header must be
a UTF-8 JSON object, the scores one finite number per candidate; anything else is a
protocol error that stops the worker and names what came. Its stderr is kept as the last
lines, each cut at :data:`STDERR_LINE_LIMIT` characters.
"""

from __future__ import annotations

import collections
import json
import os
import select
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any

from dp2o_plugins.worker_protocol import HELLO, array_bytes, bytes_array, write_frame

from dp2o_core.errors import Dp2oError

WORKER_SCRIPT = Path(__file__).with_name("metric_worker.py")
#: The largest reply frame a worker may announce (a reply is a small header or N scores).
MAX_FRAME = 16 << 20
#: How much start-up output before the worker's greeting is skipped before giving up.
MAX_PREAMBLE = 1 << 20
#: Characters kept of each stderr line.
STDERR_LINE_LIMIT = 2000


class WorkerError(Dp2oError):
    """A worker process failed: crashed, hung or raised."""


class WorkerProcess:
    """A worker script run by another interpreter, and the requests dp2o sends it.

    ``label`` names what it serves in every error (``metric 'qalign'``); ``hint`` is added to
    the error when the interpreter cannot start (which option names it).
    """

    def __init__(self, python: Path, script: Path, label: str, *, timeout: float, hint: str) -> None:
        self.python, self.label, self.timeout = Path(python), label, timeout
        self._stderr: collections.deque[str] = collections.deque(maxlen=30)
        try:
            self.process = subprocess.Popen(
                [str(self.python), str(script)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,  # unbuffered: select() sees every byte that has not been read
            )
        except OSError as error:
            raise Dp2oError(
                f"{label}: cannot start the interpreter {self.python} ({error.strerror or error}); {hint}"
            ) from None
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()
        self._greeting()

    def close(self) -> None:
        """End the worker (closing its stdin ends it)."""
        if self.process.poll() is None:
            try:
                self.process.stdin.close()  # type: ignore[union-attr]
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()

    def __del__(self) -> None:
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            process.kill()

    # -- the protocol ---------------------------------------------------------------------------
    def call(self, header: dict, arrays: list, results: int) -> tuple[dict, list]:
        try:
            stdin = self.process.stdin
            write_frame(stdin, json.dumps(header).encode("utf-8"))
            for array in arrays:
                write_frame(stdin, array_bytes(array))
            stdin.flush()  # type: ignore[union-attr]
        except OSError:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                raise self.failure("stopped reading its requests") from None
            raise self.failure(f"exited with status {self.process.returncode}") from None
        reply = self._header(self._read())
        if not reply.get("ok"):
            raise self.failure(f"raised {str(reply.get('error', '?'))[:2000]}", keep_running=True)
        arrays = []
        for _ in range(results):
            frame = self._read()
            try:
                arrays.append(bytes_array(frame))
            except (ValueError, EOFError, OSError) as error:
                raise self.failure(f"sent an array frame that is not a .npy array ({error})") from None
        return reply, arrays

    def _header(self, frame: bytes) -> dict:
        """A reply's header: a UTF-8 JSON object, else a protocol error."""
        try:
            reply = json.loads(frame.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise self.failure(f"sent a reply header that is not UTF-8 JSON: {show_reply(frame)}") from None
        if not isinstance(reply, dict):
            raise self.failure(
                f"sent a reply header that is a JSON {type(reply).__name__}: {show_reply(reply)}"
            )
        return reply

    def _greeting(self) -> None:
        """Skip what the interpreter printed before the worker's greeting (kept for the error
        message); a stream without the greeting is not a worker."""
        seen = b""
        while not seen.endswith(HELLO):
            if len(seen) > MAX_PREAMBLE:
                raise self.failure(
                    f"did not start the worker protocol; its output began {show_reply(seen[:200])}"
                )
            seen += self._read_exact(1)
        preamble = seen[: -len(HELLO)].decode("utf-8", "replace").strip()
        if preamble:
            self._stderr.append(f"(printed before the worker started) {preamble[:STDERR_LINE_LIMIT]}")

    def _read(self) -> bytes:
        """One frame of the reply, waiting at most the timeout for each part of it."""
        (size,) = struct.unpack(">Q", self._read_exact(8))
        if size > MAX_FRAME:
            raise self.failure(
                f"announced a reply of {size} bytes (more than the {MAX_FRAME >> 20} MiB any reply "
                "needs): something other than the worker wrote to its protocol stream"
            )
        return self._read_exact(size)

    def _read_exact(self, count: int) -> bytes:
        fd = self.process.stdout.fileno()  # type: ignore[union-attr]
        chunks, remaining = [], count
        while remaining:
            ready, _, _ = select.select([fd], [], [], self.timeout)
            if not ready:
                self.process.kill()
                raise self.failure(f"gave no answer within {self.timeout:g} s and was stopped")
            data = os.read(fd, min(remaining, 1 << 20))
            if not data:
                self.process.wait(timeout=10)
                raise self.failure(f"exited with status {self.process.returncode}")
            chunks.append(data)
            remaining -= len(data)
        return b"".join(chunks)

    def failure(self, what: str, keep_running: bool = False) -> WorkerError:
        if not keep_running:
            if self.process.poll() is None:
                self.process.kill()
            self._drain.join(timeout=5)  # the last lines it wrote
        tail = "\n".join(self._stderr)
        return WorkerError(
            f"{self.label} in the worker of {self.python} {what}"
            + (f". Its last output:\n{tail}" if tail else "")
        )

    def _drain_stderr(self) -> None:
        """Keep the worker's last stderr lines, each at most :data:`STDERR_LINE_LIMIT` characters
        (read in chunks: a line of hundreds of megabytes is never held whole)."""
        fd = self.process.stderr.fileno()  # type: ignore[union-attr]
        kept, cut = b"", False
        while data := os.read(fd, 1 << 16):
            start = 0
            while True:
                end = data.find(b"\n", start)
                piece = data[start:] if end < 0 else data[start:end]
                if not cut:
                    room = STDERR_LINE_LIMIT - len(kept)
                    kept, cut = kept + piece[:room], len(piece) > room
                if end < 0:
                    break
                self._keep_line(kept, cut)
                kept, cut, start = b"", False, end + 1
        if kept or cut:
            self._keep_line(kept, cut)

    def _keep_line(self, line: bytes, cut: bool) -> None:
        self._stderr.append(line.decode("utf-8", "replace").rstrip() + (" […]" if cut else ""))


class MetricWorker(WorkerProcess):
    """One pyiqa metric served by a worker process of another interpreter."""

    def __init__(
        self,
        python: Path,
        metric: str,
        *,
        device: str,
        weights: Path | None,
        folders: list[Path],
        kwargs: dict[str, Any],
        timeout: float,
    ) -> None:
        super().__init__(
            python, WORKER_SCRIPT, f"metric {metric!r}", timeout=timeout, hint="check the python option"
        )
        self.metric_name = metric
        reply, _ = self.call(
            {
                "op": "create",
                "metric": metric,
                "device": device,
                "weights": str(weights) if weights is not None else None,
                "folders": [str(f) for f in folders],
                "kwargs": kwargs,
            },
            [],
            results=0,
        )
        if not isinstance(reply.get("lower_better"), bool):
            raise self.failure(
                f"answered the metric's creation with {show_reply(reply)} (no lower_better flag)"
            )
        self.lower_better = reply["lower_better"]
        self.pyiqa_version = str(reply.get("pyiqa", ""))

    def score(self, candidates: Any, reference: Any, batch_size: int) -> list[float]:
        """Raw scores of ``candidates`` (N×3×H×W in [0, 1]; ``reference`` 1×3×H×W or 3×H×W)."""
        arrays = [candidates.detach().float().cpu().numpy()]
        if reference is not None:
            arrays.append(reference.detach().float().cpu().reshape(3, *reference.shape[-2:]).numpy())
        request = {"op": "score", "reference": reference is not None, "batch_size": batch_size}
        _, results = self.call(request, arrays, results=1)
        return self._scores(results[0], len(arrays[0]))

    def _scores(self, values: Any, count: int) -> list[float]:
        """The reply's scores: a 1-D numeric array of ``count`` finite values, else the worker
        is stopped and the error says what came instead."""
        import numpy as np

        if values.ndim != 1 or values.dtype.kind not in "fiu" or len(values) != count:
            raise self.failure(
                f"answered {count} candidates with a {values.dtype} array of shape {tuple(values.shape)} "
                f"(one number per candidate expected)"
            )
        bad = np.flatnonzero(~np.isfinite(values.astype(np.float64)))
        if len(bad):
            raise self.failure(f"scored candidate {int(bad[0])} of {count} {values[bad[0]]}")
        return [float(v) for v in values]


def show_reply(value: Any) -> str:
    """A short, printable form of what a worker sent."""
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
