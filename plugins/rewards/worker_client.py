"""dp2o's side of a metric worker (:mod:`dp2o_plugins.rewards.metric_worker`).

:class:`MetricWorker` starts ``PYTHON metric_worker.py``, asks it to create the metric and
sends it each group's candidates. A worker that exits, answers with an error or is silent
for longer than the timeout is stopped, and the error names the metric, the interpreter and
the last lines it wrote to stderr. Nothing of the group is stored then, so a rerun scores
that group again (the score stage resumes per group).
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

from dp2o_plugins.rewards.metric_worker import array_bytes, bytes_array, write_frame

from dp2o_core.errors import Dp2oError

WORKER_SCRIPT = Path(__file__).with_name("metric_worker.py")


class WorkerError(Dp2oError):
    """A metric worker failed: crashed, hung or raised."""


class MetricWorker:
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
        self.python, self.metric_name, self.timeout = Path(python), metric, timeout
        self._stderr: collections.deque[str] = collections.deque(maxlen=30)
        try:
            self.process = subprocess.Popen(
                [str(self.python), str(WORKER_SCRIPT)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,  # unbuffered: select() sees every byte that has not been read
            )
        except OSError as error:
            raise Dp2oError(
                f"metric {metric!r}: cannot start the interpreter {self.python} ({error.strerror or error}); "
                "check the python option"
            ) from None
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()
        reply, _ = self._call(
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
        self.lower_better = bool(reply["lower_better"])
        self.pyiqa_version = str(reply.get("pyiqa", ""))

    def score(self, candidates: Any, reference: Any, batch_size: int) -> list[float]:
        """Raw scores of ``candidates`` (N×3×H×W in [0, 1]; ``reference`` 1×3×H×W or 3×H×W)."""
        arrays = [candidates.detach().float().cpu().numpy()]
        if reference is not None:
            arrays.append(reference.detach().float().cpu().reshape(3, *reference.shape[-2:]).numpy())
        request = {"op": "score", "reference": reference is not None, "batch_size": batch_size}
        _, results = self._call(request, arrays, results=1)
        return [float(v) for v in results[0]]

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
    def _call(self, header: dict, arrays: list, results: int) -> tuple[dict, list]:
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
                raise self._failure("stopped reading its requests") from None
            raise self._failure(f"exited with status {self.process.returncode}") from None
        reply = json.loads(self._read())
        if not reply.get("ok"):
            raise self._failure(f"raised {reply.get('error', '?')}", keep_running=True)
        return reply, [bytes_array(self._read()) for _ in range(results)]

    def _read(self) -> bytes:
        """One frame of the reply, waiting at most the timeout for each part of it."""
        (size,) = struct.unpack(">Q", self._read_exact(8))
        return self._read_exact(size)

    def _read_exact(self, count: int) -> bytes:
        fd = self.process.stdout.fileno()  # type: ignore[union-attr]
        chunks, remaining = [], count
        while remaining:
            ready, _, _ = select.select([fd], [], [], self.timeout)
            if not ready:
                self.process.kill()
                raise self._failure(f"gave no answer within {self.timeout:g} s and was stopped")
            data = os.read(fd, min(remaining, 1 << 20))
            if not data:
                self.process.wait(timeout=10)
                raise self._failure(f"exited with status {self.process.returncode}")
            chunks.append(data)
            remaining -= len(data)
        return b"".join(chunks)

    def _failure(self, what: str, keep_running: bool = False) -> WorkerError:
        if not keep_running:
            if self.process.poll() is None:
                self.process.kill()
            self._drain.join(timeout=5)  # the last lines it wrote
        tail = "\n".join(self._stderr)
        return WorkerError(
            f"metric {self.metric_name!r} in the worker of {self.python} {what}"
            + (f". Its last output:\n{tail}" if tail else "")
        )

    def _drain_stderr(self) -> None:
        for line in iter(self.process.stderr.readline, b""):  # type: ignore[union-attr]
            self._stderr.append(line.decode("utf-8", "replace").rstrip())
