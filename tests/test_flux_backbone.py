"""The flux-controlnet backbone on a tiny FLUX model: pipeline equality, flow targets, training."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from tiny_models import save_tiny_flux, stock_pipeline, stock_sample

from dp2o_core.errors import UsageError
from dp2o_core.specs import resolve_spec


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory):
    return save_tiny_flux(tmp_path_factory.mktemp("tiny-flux"))


def backbone(manager, folder, extra=""):
    spec = f"flux:model={folder},steps=3,device=cpu,geometry=exact,max_sequence_length=8{extra}"
    return resolve_spec(manager, "backbone", spec).build()


@pytest.fixture(scope="module")
def lr():
    return torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def stock_image(model, lr, seed: int, **extra):
    """The stock FluxControlNetPipeline over ``model``'s modules, driven like ``model`` samples."""
    return stock_sample(stock_pipeline(model), model, lr, seed, steps=3, **extra)


def test_batched_sampling_matches_the_stock_flux_controlnet_pipeline(dp2o_plugin_manager, tiny_flux, lr):
    model = backbone(dp2o_plugin_manager, tiny_flux, ",color_fix=none,chunk_size=3")
    ours = model.sample(lr, [[1, 2, 3]])
    assert ours.images.shape == (1, 3, 3, 64, 64) and ours.latents.shape == (1, 3, 4, 8, 8)
    for index, seed in enumerate((1, 2, 3)):
        assert (stock_image(model, lr, seed) - ours.images[0, index]).abs().max() < 1e-4
    assert not torch.allclose(ours.images[0, 0], ours.images[0, 1])


def test_flow_targets_and_timestep_sampling(dp2o_plugin_manager, tiny_flux):
    model = backbone(
        dp2o_plugin_manager, tiny_flux, ",timestep_sampling=uniform,timestep_min=0.2,timestep_max=0.6"
    )
    s = model.sample_timesteps(1000, generator=torch.Generator().manual_seed(0))
    assert s.min() >= 0.2 and s.max() <= 0.6
    logit = backbone(dp2o_plugin_manager, tiny_flux).sample_timesteps(
        4000, generator=torch.Generator().manual_seed(0)
    )
    assert (
        abs(float(logit.mean()) - 0.5) < 0.02
        and float(((logit > 0.25) & (logit < 0.75)).float().mean()) > 0.6
    )
    x0, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([0.25, 0.75])
    x_t, target = model.noisy(x0, noise, t)
    assert torch.allclose(x_t[0], 0.75 * x0[0] + 0.25 * noise[0])
    assert torch.allclose(target, noise - x0)
    with pytest.raises(UsageError, match="timestep_min must be below timestep_max"):
        backbone(dp2o_plugin_manager, tiny_flux, ",timestep_min=0.7,timestep_max=0.3")


@pytest.mark.parametrize("trainable", ["controlnet", "lora-transformer"])
def test_training_updates_only_the_trainable_part(dp2o_plugin_manager, tiny_flux, lr, trainable):
    model = backbone(dp2o_plugin_manager, tiny_flux, f",trainable={trainable}")
    with torch.no_grad():  # a trained ControlNet: its zero-initialised output layers are no longer zero
        for p in model.controlnet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.prepare_training()
    condition = {**model.encode_condition(lr), **model.encode_prompts([""])}
    x0 = model.encode(torch.rand(1, 3, 64, 64)).detach()
    t = model.sample_timesteps(1)
    x_t, target = model.noisy(x0, torch.randn_like(x0), t)
    base_before = {k: v.clone() for k, v in model.transformer.state_dict().items() if "lora" not in k}
    params = list(model.trainable_parameters())
    with torch.no_grad():
        reference_before = model.predict(x_t, t, condition, reference=True)
    prediction = model.predict(x_t, t, condition)
    assert prediction.shape == x0.shape
    ((prediction - target) ** 2).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    torch.optim.SGD(params, lr=1.0).step()
    with torch.no_grad():
        assert torch.allclose(model.predict(x_t, t, condition, reference=True), reference_before)
        assert not torch.allclose(model.predict(x_t, t, condition), reference_before)
    base_after = {k: v for k, v in model.transformer.state_dict().items() if "lora" not in k}
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)


def test_saved_controlnet_loads_with_diffusers_and_back(dp2o_plugin_manager, tiny_flux, lr, tmp_path):
    from diffusers import FluxControlNetModel

    model = backbone(dp2o_plugin_manager, tiny_flux, ",color_fix=none")
    with torch.no_grad():
        for p in model.controlnet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save(tmp_path / "tuned")
    config = json.loads((tmp_path / "tuned" / "controlnet" / "config.json").read_text())
    assert "out_channels" not in config  # plain diffusers warned about it on every load
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_warning()
    try:
        with capture_diffusers_log() as log:
            plain = FluxControlNetModel.from_pretrained(tmp_path / "tuned" / "controlnet")
    finally:
        diffusers_logging.set_verbosity_error()
    assert "not expected and will be ignored" not in log.getvalue()
    assert all(
        torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), model.controlnet.state_dict().values(), strict=True)
    )
    ours = model.sample(lr, [[4]]).images[0, 0]
    for source in ("controlnet", "model.safetensors"):
        reloaded = backbone(
            dp2o_plugin_manager, tiny_flux, f",color_fix=none,controlnet={tmp_path / 'tuned' / source}"
        )
        assert (reloaded.sample(lr, [[4]]).images[0, 0] - ours).abs().max() < 1e-5


def test_small_groups_share_a_batch_and_keep_their_own_candidates(dp2o_plugin_manager, tiny_flux):
    model = backbone(dp2o_plugin_manager, tiny_flux, ",chunk_size=4")
    assert model.groups_per_call(2) == 2
    two = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    together = model.sample(two, [[1, 2], [3, 4]], ["a cat", "sharp photo"])
    for index, (seeds, prompt) in enumerate([([1, 2], "a cat"), ([3, 4], "sharp photo")]):
        alone = model.sample(two[index : index + 1], [seeds], [prompt])
        assert torch.allclose(together.images[index], alone.images[0], atol=1e-5)


@contextlib.contextmanager
def capture_diffusers_log():
    """What diffusers logs while the block runs."""
    import io
    import logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("diffusers")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def test_library_deprecation_notices_do_not_reach_the_user(dp2o_cli, tiny_flux, tmp_path, recwarn):
    from PIL import Image

    Image.new("RGB", (8, 8), (120, 60, 30)).save(tmp_path / "lr.png")
    spec = f"flux:model={tiny_flux},steps=1,device=cpu,geometry=exact,controlnet=new"
    done = dp2o_cli("upscale", str(tmp_path / "lr.png"), str(tmp_path / "out.png"), "--backbone", spec)
    assert done.exit_code == 0, done.stderr
    assert not [w for w in recwarn if "FluxPosEmbed" in str(w.message)]
    assert "FluxPosEmbed" not in done.stderr


def test_a_hub_style_controlnet_folder_of_five_blocks_samples_like_the_stock_pipeline_at_its_scale(
    dp2o_plugin_manager, tiny_flux, lr, tmp_path
):
    """jasperai's FLUX upscaler is a diffusers ControlNet folder of 5 double-stream blocks, run at
    controlnet_conditioning_scale 0.6: such a folder loads from its config, and the scale
    reaches every ControlNet call."""
    from diffusers import FluxControlNetModel, FluxTransformer2DModel

    transformer = FluxTransformer2DModel.from_pretrained(tiny_flux, subfolder="transformer")
    controlnet = FluxControlNetModel.from_transformer(
        transformer,
        num_layers=5,
        num_single_layers=0,
        attention_head_dim=transformer.config.attention_head_dim,
        num_attention_heads=transformer.config.num_attention_heads,
    )
    torch.manual_seed(3)
    for parameter in controlnet.controlnet_blocks.parameters():  # zero at birth: give them a say
        torch.nn.init.normal_(parameter, std=0.5)
    controlnet.save_pretrained(tmp_path / "upscaler")

    spec = f",color_fix=none,chunk_size=2,controlnet={tmp_path / 'upscaler'}"
    scaled = backbone(dp2o_plugin_manager, tiny_flux, f"{spec},conditioning_scale=0.6")
    assert len(scaled.controlnet.transformer_blocks) == 5
    ours = scaled.sample(lr, [[4, 5]])
    for index, seed in enumerate((4, 5)):
        stock = stock_image(scaled, lr, seed, controlnet_conditioning_scale=0.6)
        assert (stock - ours.images[0, index]).abs().max() < 1e-4
    unscaled = backbone(dp2o_plugin_manager, tiny_flux, spec)
    assert (unscaled.sample(lr, [[4, 5]]).images - ours.images).abs().max() > 1e-3  # the scale matters
    # and training predicts with it too
    x0 = scaled.encode(ours.images[0])
    timesteps = scaled.sample_timesteps(2, generator=torch.Generator().manual_seed(0))
    x_t, _ = scaled.noisy(x0, torch.randn_like(x0), timesteps)
    condition = {**scaled.encode_condition(lr.expand(2, -1, -1, -1)), **scaled.encode_prompts(["", ""])}
    with torch.no_grad():
        difference = scaled.predict(x_t, timesteps, condition) - unscaled.predict(x_t, timesteps, condition)
    assert difference.abs().max() > 1e-4
