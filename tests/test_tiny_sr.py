"""tiny-sr: the bundled generator samples, trains, saves and reloads like any backbone."""

from __future__ import annotations

import pytest
import torch
from images import photo

from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec


def build(spec: str = "tiny-sr"):
    return resolve_spec(PluginManager(), "backbone", spec).build()


@pytest.fixture(scope="module")
def model():
    return build()


@pytest.fixture(scope="module")
def lr():
    hr = torch.from_numpy(photo("astronaut", 96).copy()).permute(2, 0, 1).unsqueeze(0).float() / 255
    return torch.nn.functional.interpolate(hr, size=(24, 24), mode="bicubic", antialias=True).clamp(0, 1)


def test_bundled_weights_ship_in_the_package_within_10_mb():
    from dp2o_plugins.backbones.tiny_sr.network import BUNDLED_WEIGHTS

    files = list(BUNDLED_WEIGHTS.rglob("*.safetensors"))
    assert files, "the bundled tiny-sr weights are missing"
    assert sum(f.stat().st_size for f in files) <= 10 * 1024 * 1024


def test_sampling_is_x4_seeded_and_varies_with_the_seed(model, lr):
    first = model.sample(lr, [[1, 2, 3]])
    again = model.sample(lr, [[3, 1]])
    assert first.images.shape == (1, 3, 3, 96, 96)
    assert torch.equal(first.images[0, 0], again.images[0, 1])  # seed 1, whatever its position
    assert torch.equal(first.images[0, 2], again.images[0, 0])
    assert (first.images[0, 0] - first.images[0, 1]).abs().mean() > 1e-3
    assert first.latents.shape == first.images.shape
    assert torch.allclose(model.decode(first.latents[0]), first.images[0], atol=1e-5)


def test_any_lr_size_works(model):
    odd = torch.rand(2, 3, 13, 7)
    result = model.sample(odd, [[0], [1]])
    assert result.images.shape == (2, 1, 3, 52, 28)


def test_velocity_target_and_prediction_are_consistent(model, lr):
    """At the true residual the ideal residual velocity gives the image-space target."""
    x0 = model.encode(model.upsample(lr) + 0.05)
    noise = torch.randn_like(x0)
    t = torch.tensor([500])
    x_t, target = model.noisy(x0, noise, t)
    from dp2o_plugins.backbones.tiny_sr.network import alpha_sigma

    alpha, sigma = alpha_sigma(model.scheduler, t, x0)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(alpha))
    assert torch.allclose(alpha * x0 + sigma * noise, x_t)
    assert torch.allclose(alpha * noise - sigma * x0, target)


def test_training_moves_the_policy_and_not_the_reference(tmp_path, lr):
    model = build()
    model.prepare_training()
    condition = model.encode_condition(lr)
    x0 = model.encode(model.upsample(lr))
    noise = torch.randn_like(x0)
    t = torch.tensor([300])
    x_t, target = model.noisy(x0, noise, t)
    before = model.predict(x_t, t, condition, reference=True).detach()
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=1e-2)
    loss = (model.predict(x_t, t, condition) - target).pow(2).mean()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        assert torch.equal(model.predict(x_t, t, condition, reference=True), before)
        assert not torch.allclose(model.predict(x_t, t, condition), before)
    model.save(tmp_path / "tuned")
    options = model.tuned_options(tmp_path / "tuned")
    reloaded = build(f"tiny-sr:weights={options['weights']}")
    with torch.no_grad():
        assert torch.allclose(
            reloaded.predict(x_t, t, condition), model.predict(x_t, t, condition), atol=1e-6
        )


def test_a_folder_that_is_not_a_model_is_named(tmp_path):
    from dp2o_core.errors import Dp2oError

    with pytest.raises(Dp2oError, match=f"{tmp_path} is not a tiny-sr model folder"):
        build(f"tiny-sr:weights={tmp_path}")


def test_init_random_is_a_seeded_fresh_unet_with_the_folders_schedule_and_scaling(tmp_path):
    bundled = build("tiny-sr")
    fresh, same, other = (build(f"tiny-sr:init=random,init_seed={seed}") for seed in (0, 0, 1))
    weights = [dict(model.unet.named_parameters()) for model in (bundled, fresh, same, other)]
    name = next(iter(weights[0]))
    assert torch.equal(weights[1][name], weights[2][name])
    assert not torch.equal(weights[1][name], weights[3][name])
    assert not torch.equal(weights[0][name], weights[1][name])
    assert fresh.settings == bundled.settings
    assert fresh.scheduler.config == bundled.scheduler.config
    # what it saves loads as a whole model, not as another random start
    fresh.save(tmp_path / "model")
    options = fresh.tuned_options(tmp_path / "model")
    assert options["init"] == "weights"
    reloaded = build("tiny-sr:" + ",".join(f"{k}={v}" for k, v in options.items()))
    assert torch.equal(dict(reloaded.unet.named_parameters())[name], weights[1][name])
