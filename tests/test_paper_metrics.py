"""The paper's reward metrics run in the shipped environment: each real pyiqa architecture is
built with random stand-ins for its downloads (tests/iqa_weights.py) and scores a group of
candidates through dp2o's scorer — after the preflight has found every file it needs.

Covered here: LPIPS, TOPIQ-FR, TOPIQ-NR, MANIQA, MUSIQ, CLIPIQA+, AFINE-FR and AFINE-NR (the reward's), and
NIMA and TOPIQ-IAA (two of the evaluation's untrained metrics). Q-Align
(a 7 B mPLUG-Owl2 model with its own tokenizer) imports under the pinned transformers but cannot
score there (below); tests/test_qalign_worker.py scores it in its worker environment.
"""

from __future__ import annotations

import math

import pytest
import torch
from iqa_weights import (
    install_random_afine,
    install_random_clipiqa_plus,
    install_random_weights,
    local_clip_files,
)

from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec


@pytest.fixture
def offline_homes(tmp_path, monkeypatch):
    """Empty, private caches (torch hub, Hugging Face, pyiqa) and no network."""
    import huggingface_hub.constants as hub
    from pyiqa.utils import download_util

    torch_home, hub_cache = tmp_path / "torch", tmp_path / "hf" / "hub"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(torch_home / "hub" / "pyiqa"))
    monkeypatch.delenv("DP2O_IQA_WEIGHTS", raising=False)
    local_clip_files(monkeypatch)
    return tmp_path / "weights", hub_cache, torch_home


@pytest.mark.parametrize(
    "metric",
    [
        "lpips",
        "topiq_fr",
        "topiq_nr",
        "maniqa",
        "musiq",
        "clipiqa+",
        "afine_fr",
        "afine_nr",
        "nima",
        "topiq_iaa",
    ],
)
def test_a_paper_metric_scores_through_dp2o_with_random_weights(metric, offline_homes, tmp_path):
    weights_dir, hub_cache, torch_home = offline_homes
    # MANIQA averages 20 random crops per image by default: one keeps the test to seconds
    extra = ",kwargs=[test_sample=1]" if metric == "maniqa" else ""
    spec = f"pyiqa:metric={metric},weights_dir={weights_dir},device=cpu,batch_size=2{extra}"
    resolved = resolve_spec(PluginManager(), "reward", spec)
    before = resolved.registration.cls.readiness(resolved.options)
    assert before and all(check.status == "missing" for check in before)

    if metric == "clipiqa+":
        install_random_clipiqa_plus(weights_dir, torch_home)
    elif metric.startswith("afine"):
        install_random_afine(weights_dir, tmp_path / "home")
    else:
        install_random_weights(metric, weights_dir, hub_cache, torch_home)
    after = resolved.registration.cls.readiness(resolved.options)
    assert [check.status for check in after] == ["present"] * len(before)

    reward = resolved.build()
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(1, 3, 224, 224, generator=generator)
    candidates = (reference + 0.3 * torch.rand(3, 3, 224, 224, generator=generator)).clamp(0, 1)
    scores = reward.score(candidates, reference if reward.info.mode == "FR" else None)[metric]
    assert len(scores) == 3 and all(math.isfinite(v) for v in scores)
    assert len(reward.reward({metric: scores})) == 3


def test_qalign_cannot_run_under_dp2os_transformers_and_the_preflight_says_so(offline_homes, tmp_path):
    """Q-Align loads here (a tiny random mPLUG-Owl2 in its place) but fails on its first image;
    the preflight names that and points to a worker in its own environment, which is what
    tests/test_qalign_worker.py proves works."""
    from iqa_weights import install_tiny_qalign

    _, hub_cache, _ = offline_homes
    install_tiny_qalign(hub_cache)
    resolved = resolve_spec(PluginManager(), "reward", "pyiqa:metric=qalign,device=cpu")
    checks = resolved.registration.cls.readiness(resolved.options)
    assert any(c.status == "missing" and "invert_attention_mask" in c.problem for c in checks)
    assert any("pythons=[qalign=" in c.fix for c in checks)
    reward = resolved.build()
    reward.prepare()  # the model, its tokenizer and its image processor load
    with pytest.raises(AttributeError, match="invert_attention_mask"):
        reward.score(torch.rand(1, 3, 64, 64))


def test_afine_fr_encodes_the_reference_once_per_group_and_scores_as_pyiqa(offline_homes, tmp_path):
    """A-FINE runs its CLIP on the candidate and on the reference in every call: dp2o encodes the
    reference once per group (and its naturalness once), with pyiqa's per-candidate scores."""
    weights_dir, _, _ = offline_homes
    install_random_afine(weights_dir, tmp_path / "home")
    spec = f"pyiqa:metric=afine_fr,weights_dir={weights_dir},device=cpu"
    reward = resolve_spec(PluginManager(), "reward", spec).build()
    metric = reward.metric
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(1, 3, 64, 64, generator=generator)
    candidates = (reference + 0.3 * torch.rand(4, 3, 64, 64, generator=generator)).clamp(0, 1)
    with torch.no_grad():
        theirs = [float(metric(candidates[i : i + 1].clone(), reference.clone())) for i in range(4)]
    encoded: list[int] = []
    metric.net.clip_model.visual.register_forward_hook(lambda _m, i, _o: encoded.append(i[0].shape[0]))
    assert reward.score(candidates, reference)["afine_fr"] == pytest.approx(theirs, abs=1e-6)
    assert sum(encoded) == 4 + 1
    assert "encode_image" not in vars(metric.net.clip_model)
