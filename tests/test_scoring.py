"""pyiqa metrics through dp2o: same scores as pyiqa, offline weights, the offline preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dp2o_plugins.rewards.scoring import score_candidates
from dp2o_plugins.rewards.weights import MissingWeightsError
from images import photo

from dp2o_core.specs import resolve_spec


@pytest.fixture(scope="module")
def group():
    hr = torch.from_numpy(photo("astronaut", 128)).permute(2, 0, 1)[None].float() / 255
    generator = torch.Generator().manual_seed(0)
    candidates = torch.cat(
        [
            (hr + s * torch.randn(hr.shape, generator=generator)).clamp(0, 1)
            for s in (0.0, 0.02, 0.05, 0.1, 0.2)
        ]
    )
    return candidates, hr


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No downloads, and empty caches of our own: the user's caches are neither read nor written."""
    from pyiqa.utils import download_util

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("DP2O_CACHE", str(tmp_path / "dp2o-cache"))
    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", str(tmp_path / "torch-home" / "hub" / "pyiqa"))
    monkeypatch.delenv("DP2O_IQA_WEIGHTS", raising=False)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("lpips", {"net": "squeeze", "pretrained": False, "pnet_rand": True}),
        ("fsim", {}),
        ("gmsd", {}),
        ("piqe", {}),
    ],
)
def test_scores_equal_pyiqa_called_per_candidate(group, name, kwargs):
    import pyiqa

    candidates, hr = group
    torch.manual_seed(0)
    metric = pyiqa.create_metric(name, device="cpu", **kwargs)
    ours = score_candidates(metric, metric.metric_mode, candidates, hr, batch_size=2, dtype="float32")
    theirs = [
        float(
            metric(candidates[i : i + 1], hr) if metric.metric_mode == "FR" else metric(candidates[i : i + 1])
        )
        for i in range(len(candidates))
    ]
    assert ours == pytest.approx(theirs, abs=1e-5)


def images_computed(module: torch.nn.Module) -> list[int]:
    """Batch sizes of every image that ``module``'s first convolution really processes."""
    sizes: list[int] = []
    first = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))
    first.register_forward_hook(lambda _m, inputs, _o: sizes.append(inputs[0].shape[0]))
    return sizes


@pytest.mark.parametrize("batch_size", [1, 3, None])
def test_topiq_fr_computes_the_reference_features_once_per_group(group, batch_size):
    """TOPIQ-FR (ResNet-50 features of candidate and reference, compared by attention): the
    reference is half the backbone work of a per-candidate call; dp2o does it once per group,
    and the scores equal pyiqa's per-candidate calls."""
    import pyiqa

    candidates, hr = group[0][1:], group[1]  # (the first candidate is the reference itself)
    torch.manual_seed(0)
    metric = pyiqa.create_metric("topiq_fr", device="cpu", pretrained=False, backbone_pretrain=False)
    with torch.no_grad():
        theirs = [float(metric(candidates[i : i + 1], hr)) for i in range(len(candidates))]
    computed = images_computed(metric.net.semantic_model)
    ours = score_candidates(metric, "FR", candidates, hr, batch_size=batch_size, dtype="float32")
    assert ours == pytest.approx(theirs, abs=1e-5)
    assert sum(computed) == len(candidates) + 1  # every candidate, and the reference once
    again = score_candidates(metric, "FR", candidates.flip(0), hr.flip(-1), batch_size, "float32")
    assert sum(computed) == 2 * (len(candidates) + 1)  # the next group has its own reference
    assert again[::-1] != pytest.approx(ours, abs=1e-4)  # … and is not served the old one
    assert "forward" not in vars(metric.net.semantic_model)  # the wrapper is gone after the group


def test_offline_preset_scores_real_images_with_real_parameters(dp2o_plugin_manager, group):
    candidates, hr = group
    reward = resolve_spec(dp2o_plugin_manager, "reward", "hybrid-offline").build()
    scores = reward.score(candidates, hr)
    assert set(scores) == {"fsim", "vsi", "gmsd", "niqe", "piqe"}
    assert scores["fsim"][0] == pytest.approx(1.0, abs=1e-4)  # the reference itself
    assert scores["fsim"][0] > scores["fsim"][-1] and scores["gmsd"][0] < scores["gmsd"][-1]
    assert scores["niqe"][-1] > scores["niqe"][0] + 1  # heavy noise looks less natural to NIQE
    rewards = reward.reward(scores)
    assert rewards[0] > rewards[-1]
    assert all(0 <= r <= 1 for r in rewards)


def test_missing_weights_name_the_metric_file_and_folder_then_a_written_file_works(
    dp2o_plugin_manager, tmp_path, group
):
    weights = tmp_path / "weights"
    weights.mkdir()
    spec = f"pyiqa:metric=lpips,weights_dir={weights},kwargs=[net=squeeze,pnet_rand=true]"
    reward = resolve_spec(dp2o_plugin_manager, "reward", spec).build()
    candidates, hr = group
    with pytest.raises(MissingWeightsError) as error:
        reward.score(candidates, hr)
    message = str(error.value)
    assert "metric 'lpips' needs the weight file 'LPIPS_v0.1_squeeze" in message
    assert str(weights) in message and "--weights-dir" in message
    assert "Traceback" not in message and "URLError" not in message

    # Write random weights under the expected name, as a user would copy real ones.
    import pyiqa

    layout = pyiqa.create_metric("lpips", device="cpu", net="squeeze", pretrained=False, pnet_rand=True).net
    torch.save(
        {k: torch.randn_like(v) for k, v in layout.state_dict().items()}, weights / error.value.filename
    )
    fresh = resolve_spec(dp2o_plugin_manager, "reward", spec).build()
    scores = fresh.score(candidates, hr)["lpips"]
    assert len(scores) == 5 and all(np.isfinite(scores))


def test_weights_file_option_and_a_missing_file(dp2o_plugin_manager, tmp_path, group):
    from dp2o_core.errors import Dp2oError

    reward = resolve_spec(
        dp2o_plugin_manager, "reward", f"pyiqa:metric=niqe,weights={tmp_path / 'nope.mat'}"
    ).build()
    with pytest.raises(Dp2oError, match=r"weights file .*nope\.mat for metric 'niqe' does not exist"):
        reward.score(*group)


def test_unknown_metric_name_suggests_a_close_one(dp2o_plugin_manager):
    from dp2o_core.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="unknown pyiqa metric 'maniq'. Did you mean 'maniqa'"):
        resolve_spec(dp2o_plugin_manager, "reward", "pyiqa:metric=maniq").build()


def test_a_metric_that_cannot_score_small_images_says_so(dp2o_plugin_manager):
    from dp2o_core.errors import Dp2oError

    reward = resolve_spec(dp2o_plugin_manager, "reward", "hybrid-offline").build()
    small = torch.rand(2, 3, 64, 64)
    with pytest.raises(Dp2oError, match=r"metric 'niqe' cannot score 64×64 images .*NIQE at least 96 px"):
        reward.score(small, small[:1])
