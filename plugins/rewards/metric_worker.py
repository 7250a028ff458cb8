"""A pyiqa metric in a worker process: dp2o runs this file with another Python interpreter.

A metric whose code needs other package versions than dp2o's (Q-Align and its transformers)
runs in its own virtual environment: ``pyiqa:metric=qalign,python=/opt/qalign/bin/python``.
dp2o starts ``PYTHON metric_worker.py``; this file imports only the standard library, numpy,
torch, pyiqa and ``worker_protocol.py`` from its parent folder, never dp2o, so that environment
needs nothing else.

Protocol (stdin → requests, stdout → replies): every message is frames of an 8-byte
big-endian length and that many bytes. A request or reply starts with a JSON frame; arrays
follow as ``.npy`` frames (``allow_pickle=False``).

* ``{"op": "create", "metric", "device", "weights", "folders", "kwargs"}`` →
  ``{"ok": true, "lower_better", "pyiqa"}``
* ``{"op": "score", "reference": bool, "batch_size"}`` + candidates N×3×H×W float32
  (+ reference 3×H×W) → ``{"ok": true}`` + scores (N float64)
* any failure → ``{"ok": false, "error": "Type: message"}``; end of stdin ends the worker.

Before its first reply the worker writes ``worker_protocol.HELLO`` on the protocol stream: whatever the
interpreter printed before it (a banner from a start-up hook) is skipped by dp2o, not read as
a frame. From then on library output goes to stderr (the protocol owns stdout); dp2o shows
its tail when the worker fails.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

if __package__:  # imported by dp2o (its client side)
    from dp2o_plugins.worker_protocol import serve
else:  # run as a script by another interpreter, without dp2o: the protocol module beside its folder
    sys.path.append(str(Path(__file__).resolve().parents[1]))
    from worker_protocol import serve  # type: ignore[no-redef]


def create(request: dict):
    """The pyiqa metric, weight files looked up by name in the given folders first (what
    ``dp2o_plugins.rewards.weights`` does in dp2o's process; repeated here because this file
    must run without dp2o)."""
    import pyiqa
    import torch.hub

    folders = [Path(f) for f in request.get("folders") or []]
    original = torch.hub.download_url_to_file

    def fetch(url, dst, *args, **kwargs):
        for folder in folders:
            candidate = folder / Path(dst).name
            if candidate.is_file():
                Path(dst).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(candidate, dst)
                return
        original(url, dst, *args, **kwargs)

    from pyiqa.utils import download_util

    torch.hub.download_url_to_file = download_util.download_url_to_file = fetch
    options = dict(request.get("kwargs") or {})
    if request.get("weights"):
        options["pretrained_model_path"] = request["weights"]
    try:
        return pyiqa.create_metric(request["metric"], device=request.get("device") or "cpu", **options)
    finally:
        torch.hub.download_url_to_file = download_util.download_url_to_file = original


def score(metric, candidates, reference, batch_size: int) -> list[float]:
    """Raw scores, ``batch_size`` candidates per call, each call on its own copies (some
    metrics normalise their inputs in place); a metric that takes one image per call (A-FINE)
    is fed one at a time."""
    import torch

    device = next(iter(metric.parameters()), torch.empty(0)).device
    images = torch.from_numpy(candidates).float()
    ref = None if reference is None else torch.from_numpy(reference).float().unsqueeze(0)

    def call(chunk):
        chunk = chunk.to(device, copy=True)
        if ref is None:
            return metric(chunk)
        return metric(chunk, ref.to(device).expand(chunk.shape[0], -1, -1, -1).contiguous())

    values: list[float] = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start : start + batch_size]
            try:
                out = call(chunk)
            except (RuntimeError, ValueError, AssertionError, IndexError):
                if len(chunk) == 1:
                    raise
                out = torch.cat([call(chunk[i : i + 1]).reshape(-1) for i in range(len(chunk))])
            values.extend(float(v) for v in out.reshape(-1).float().cpu())
    return values


class MetricServer:
    """The requests of one metric worker: ``create`` the metric, then ``score`` groups."""

    def __init__(self) -> None:
        self.metric: Any = None

    @staticmethod
    def arrays_in(request: dict) -> int:
        """Candidates, and the reference when the request says it comes."""
        return (2 if request.get("reference") else 1) if request.get("op") == "score" else 0

    def handle(self, request: dict, arrays: list) -> tuple[dict, list]:
        if request.get("op") == "create":
            import pyiqa

            self.metric = create(request)
            return {
                "ok": True,
                "lower_better": bool(self.metric.lower_better),
                "pyiqa": pyiqa.__version__,
            }, []
        if request.get("op") == "score" and self.metric is not None:
            import numpy as np

            reference = arrays[1] if len(arrays) > 1 else None
            values = score(self.metric, arrays[0], reference, int(request.get("batch_size") or 1))
            return {"ok": True}, [np.asarray(values, dtype=np.float64)]
        return {"ok": False, "error": f"unexpected request {request.get('op')!r}"}, []


def main() -> None:
    """Serve requests until stdin ends."""
    server = MetricServer()
    serve(server.handle, server.arrays_in)


if __name__ == "__main__":
    main()
