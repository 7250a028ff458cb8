"""Scoring the M candidates of one group: batched, with reference-side work done once.

A full-reference metric compares every candidate with the same HR image, and for the
metrics with a learned feature extractor a per-candidate call spends part of its work on the
reference's features (about half for A-FINE, a quarter for TOPIQ-FR at 256 px). dp2o computes
them once per group:

* LPIPS: the reference's normalised features are computed here and each candidate batch is
  compared with them;
* TOPIQ-FR (and every CFANet with a timm or CLIP backbone and a reference) and A-FINE: the
  feature extractor is wrapped for the group (:class:`ReferenceFeatureMemo`) so that a call
  whose batch is one image repeated — the reference broadcast to the batch — is computed for
  one image, once, and served from memory afterwards; A-FINE's naturalness head, which also
  runs on the reference every call, is wrapped the same way.

Otherwise the reference is broadcast (expanded, not copied) to the batch. Scores equal pyiqa's
own calls once per candidate to within floating-point rounding (tests/test_scoring.py,
tests/test_paper_metrics.py; speed: benchmarks/score_group.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


def score_candidates(
    metric, mode: str, candidates, reference, batch_size: int | None, dtype: str
) -> list[float]:
    """Raw scores of ``candidates`` (N×3×H×W in [0, 1]) with a pyiqa metric.

    ``batch_size`` None picks one: 16 on a GPU and 1 on a CPU, where large batches of big
    networks run slower than single images on a few cores (on two: TOPIQ-FR 0.87× pyiqa per
    candidate at 8, 1.43× at 1; LPIPS 1.65× at 8, 1.76× at 1; benchmarks/score_group.py). The
    reference's features are computed once per group at any batch size.
    """
    import torch

    if mode == "FR" and reference is None:
        raise ValueError(f"metric {metric.metric_name!r} is full-reference and needs the HR image")
    device = next(iter(metric.parameters()), torch.empty(0)).device
    scores: list[float] = []
    with torch.no_grad(), _autocast(device, dtype), _reference_features_once(metric, mode):
        fast = _lpips_scorer(metric, reference.to(device)) if mode == "FR" else None
        if batch_size is None:
            batch_size = 16 if device.type == "cuda" else 1
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


class ReferenceFeatureMemo:
    """Wraps a feature extractor for one group so that the reference is computed once.

    A call whose batch is one image repeated (the reference broadcast to the batch, or a batch
    of one) is looked up among the two most recently used such images; a hit returns the
    stored output, expanded along the batch dimension, and a miss computes one image and stores
    it. Any other batch (distinct candidates) is computed as is. Two entries because a per-image
    metric alternates candidate, reference, candidate, reference. The images alone are the key:
    further arguments (A-FINE's head takes the image's own features) must follow from them.
    ``batched_outputs`` False (outputs whose first dimension is not the batch) serves only
    batches of one.
    """

    def __init__(self, function: Callable[..., Any], batched_outputs: bool = True) -> None:
        self.function = function
        self.batched_outputs = batched_outputs
        self.entries: list[tuple[Any, Any]] = []

    def __call__(self, images, *args: Any, **kwargs: Any) -> Any:
        import torch

        size = images.shape[0]
        first = images[:1]
        repeated = size == 1 or (
            self.batched_outputs and not args and not kwargs and bool((images == first).all())
        )
        if not repeated:
            return self.function(images, *args, **kwargs)
        for entry in self.entries:
            key, output = entry
            if key.shape == first.shape and torch.equal(key, first):
                self.entries = [*(e for e in self.entries if e is not entry), entry]  # most recent last
                return _expand_batch(output, size)
        output = self.function(first, *args, **kwargs)
        self.entries = [*self.entries[-1:], (first.clone(), output)]
        return _expand_batch(output, size)


def _expand_batch(output: Any, size: int) -> Any:
    """``output`` (a tensor or nested lists/tuples of them, batch of one) expanded to ``size``."""
    if size == 1:
        return output
    if isinstance(output, (list, tuple)):
        return type(output)(_expand_batch(item, size) for item in output)
    return output.expand(size, *output.shape[1:])


def _memo_targets(net) -> list[tuple[Any, str, bool]]:
    """(object, method name, outputs batched) of the feature extractors that see the reference."""
    kind = type(net).__name__
    if kind == "CFANet" and getattr(net, "use_ref", False):
        name = net.semantic_model_name
        if "swin" in name:  # features come from the Swin's layers one by one, not one call
            return []
        if "clip" in name:
            return [(net.semantic_model[0].visual, "forward_features", False)]
        return [(net.semantic_model, "forward", True)]
    if kind == "AFINE":
        return [(net.clip_model, "encode_image", False), (net.net_qhead, "forward", False)]
    return []


@contextlib.contextmanager
def _reference_features_once(metric, mode: str) -> Iterator[None]:
    """Wrap ``metric``'s reference-side feature extractors in memos for one group; unwrap after."""
    targets = _memo_targets(getattr(metric, "net", None)) if mode == "FR" else []
    for owner, method, batched in targets:
        # an instance attribute shadows the class's method
        setattr(owner, method, ReferenceFeatureMemo(getattr(owner, method), batched))
    try:
        yield
    finally:
        for owner, method, _ in targets:
            vars(owner).pop(method, None)
