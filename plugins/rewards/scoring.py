"""Scoring the M candidates of one group: batched, with reference-side work done once.

A full-reference metric compares every candidate with the same HR image. Where the
metric's network allows it (LPIPS), the reference's features are computed once per group
and reused for every candidate batch; otherwise the reference is broadcast (expanded, not
copied) to the batch. Scores equal pyiqa's own calls to within floating-point rounding.
"""

from __future__ import annotations

import contextlib


def score_candidates(
    metric, mode: str, candidates, reference, batch_size: int | None, dtype: str
) -> list[float]:
    """Raw scores of ``candidates`` (N×3×H×W in [0, 1]) with a pyiqa metric.

    ``batch_size`` None picks one: 16 on a GPU; on a CPU 8 where reference features are
    cached (fewer, larger passes win) and 1 otherwise, because large batches of big
    networks run slower than single images on a few CPU cores (benchmarks/score_group.py).
    """
    import torch

    if mode == "FR" and reference is None:
        raise ValueError(f"metric {metric.metric_name!r} is full-reference and needs the HR image")
    device = next(iter(metric.parameters()), torch.empty(0)).device
    scores: list[float] = []
    with torch.no_grad(), _autocast(device, dtype):
        fast = _lpips_scorer(metric, reference.to(device)) if mode == "FR" else None
        if batch_size is None:
            batch_size = 16 if device.type == "cuda" else (8 if fast is not None else 1)
        if getattr(metric, "_dp2o_one_at_a_time", False):
            batch_size = 1
        for start in range(0, candidates.shape[0], batch_size):
            batch = candidates[start : start + batch_size]
            try:
                values = _score_batch(metric, mode, fast, batch, reference, device)
            except (RuntimeError, ValueError, AssertionError, IndexError) as error:
                if len(batch) == 1:
                    raise _metric_failed(metric, batch, error) from None
                # some networks take one image per call (A-FINE squeezes the batch dimension):
                # score this batch and every later one image by image
                metric._dp2o_one_at_a_time = True
                values = torch.cat(
                    [
                        _score_batch(metric, mode, fast, batch[i : i + 1], reference, device).reshape(-1)
                        for i in range(len(batch))
                    ]
                )
            scores.extend(float(v) for v in values.reshape(-1).float().cpu())
    return scores


def _score_batch(metric, mode: str, fast, batch, reference, device):
    """One call of the metric on ``batch``. Every call gets its own copy: a metric that
    normalises its input in place (A-FINE) must not change what the next metric scores."""
    if fast is not None:
        return fast(batch.to(device, copy=True))
    if mode == "FR":
        return _full_reference(metric, batch, reference, device)
    return metric(batch.to(device, copy=True))


def _full_reference(metric, candidates, reference, device):
    """``metric(candidates, reference)`` on copies, the reference broadcast to the batch (a view
    of one copy). A metric that writes into its inputs in place (A-FINE) refuses such a view:
    it gets fresh copies and, from then on, a reference copied per batch."""
    chunk = candidates.to(device, copy=True)
    one = reference.to(device, copy=True)
    if getattr(metric, "_dp2o_writes_inputs", False):
        return metric(chunk, one.expand(chunk.shape[0], -1, -1, -1).contiguous())
    try:
        return metric(chunk, one.expand(chunk.shape[0], -1, -1, -1))
    except RuntimeError as error:
        if "single memory location" not in str(error):
            raise
        metric._dp2o_writes_inputs = True
        return _full_reference(metric, candidates, reference, device)


def _metric_failed(metric, images, error: BaseException) -> Exception:
    from dp2o_core.errors import Dp2oError

    height, width = images.shape[-2:]
    detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return Dp2oError(
        f"metric {metric.metric_name!r} cannot score {width}×{height} images "
        f"({type(error).__name__}: {detail}). "
        "Some metrics need larger images (NIQE at least 96 px, MS-SSIM about 161 px): use larger crops "
        "or leave the metric out of the reward."
    )


def _autocast(device, dtype: str):
    import torch

    if dtype == "float32" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=getattr(torch, dtype))


def _lpips_scorer(metric, reference):
    """For LPIPS: a function scoring a batch against reference features computed once here."""
    try:
        from pyiqa.archs.lpips_arch import LPIPS, normalize_tensor, spatial_average
    except ImportError:
        return None
    net = metric.net
    if (
        not isinstance(net, LPIPS)
        or not net.lpips
        or net.spatial
        or getattr(net, "semantic_weight_layer", -1) >= 0
    ):
        return None

    def features(images):
        scaled = 2 * images - 1
        inputs = net.scaling_layer(scaled) if net.version == "0.1" else scaled
        return [normalize_tensor(out) for out in net.net.forward(inputs)]

    reference_features = features(reference[:1])

    def score(batch):
        batch_features = features(batch)
        total = 0
        for layer in range(net.L):
            diff = (reference_features[layer] - batch_features[layer]) ** 2
            total = total + spatial_average(net.lins[layer](diff), keepdim=True)
        return total

    return score
