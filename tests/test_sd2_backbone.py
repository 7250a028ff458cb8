"""The sd2-controlnet backbone on a tiny model: sampling like diffusers, training interface, saving."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from tiny_models import save_tiny_sd, stock_pipeline, stock_sample

from dp2o_core.errors import Dp2oError
from dp2o_core.specs import resolve_spec


def backbone(manager, folder, extra=""):
    spec = f"sd2:model={folder},steps=4,device=cpu,geometry=exact{extra}"
    return resolve_spec(manager, "backbone", spec).build()


@pytest.fixture(scope="module")
def lr():
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_sampling_shapes_range_and_seed_reproducibility(dp2o_plugin_manager, tiny_sd, lr):
    model = backbone(dp2o_plugin_manager, tiny_sd, ",chunk_size=2")
    result = model.sample(lr, [[1, 2, 3], [4, 5, 6]])
    assert result.images.shape == (2, 3, 3, 64, 64)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert result.latents.shape == (2, 3, 4, 8, 8)
    again = model.sample(lr[1:], [[5]])
    # batching does not matter: the colour fix works on 8-bit images, so a rounding flipped by
    # batched arithmetic moves the odd pixel by a grey level or two
    difference = (again.images[0, 0] - result.images[1, 1]).abs()
    assert difference.max() < 2.5 / 255 and (difference < 1e-5).float().mean() > 0.99
    assert not torch.allclose(result.images[0, 0], result.images[0, 1])  # seeds differ


def stock_image(model, lr, seed: int, **extra):
    """The stock StableDiffusionControlNetPipeline over ``model``'s modules, driven like ``model``
    samples (``lr``: one image)."""
    return stock_sample(stock_pipeline(model), model, lr, seed, steps=4, **extra)


def test_batched_sampling_matches_the_stock_diffusers_pipeline(dp2o_plugin_manager, tiny_sd, lr):
    model = backbone(dp2o_plugin_manager, tiny_sd, ",color_fix=none,chunk_size=3")
    ours = model.sample(lr[:1], [[7, 8, 9]]).images[0]
    for index, seed in enumerate((7, 8, 9)):
        assert (stock_image(model, lr[:1], seed) - ours[index]).abs().max() < 1e-4


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_targets_follow_the_scheduler_config(dp2o_plugin_manager, tmp_path, prediction):
    folder = save_tiny_sd(tmp_path / "m", prediction_type=prediction)
    model = backbone(dp2o_plugin_manager, folder)
    x0 = torch.randn(2, 4, 8, 8)
    noise = torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 500])
    x_t, target = model.noisy(x0, noise, t)
    alphas = model.scheduler.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    sigmas = (1 - model.scheduler.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(x_t, alphas * x0 + sigmas * noise, atol=1e-5)
    expected = noise if prediction == "epsilon" else alphas * noise - sigmas * x0
    assert torch.allclose(target, expected, atol=1e-5)


@pytest.mark.parametrize("trainable", ["controlnet", "lora-controlnet", "lora-unet"])
def test_only_the_trainable_part_learns_and_the_reference_stays(dp2o_plugin_manager, tiny_sd, lr, trainable):
    model = backbone(dp2o_plugin_manager, tiny_sd, f",trainable={trainable}")
    with torch.no_grad():  # a trained ControlNet: its zero-initialised output convolutions are no longer zero
        for p in model.controlnet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.prepare_training()
    unet_before = {k: v.clone() for k, v in model.unet.state_dict().items() if "lora" not in k}
    condition = {**model.encode_condition(lr[:1]), **model.encode_prompts(["a cat"])}
    x0 = model.encode(torch.rand(1, 3, 64, 64))
    noise, t = torch.randn_like(x0), model.sample_timesteps(1)
    x_t, target = model.noisy(x0, noise, t)
    params = list(model.trainable_parameters())
    assert params
    optimizer = torch.optim.SGD(params, lr=1.0)
    with torch.no_grad():
        reference_before = model.predict(x_t, t, condition, reference=True)
    loss = ((model.predict(x_t, t, condition) - target) ** 2).mean()
    loss.backward()
    grads = [p for p in params if p.grad is not None and p.grad.abs().sum() > 0]
    assert grads, "no trainable parameter received a gradient"
    optimizer.step()
    with torch.no_grad():
        reference_after = model.predict(x_t, t, condition, reference=True)
        policy_after = model.predict(x_t, t, condition)
    assert torch.allclose(reference_before, reference_after)
    assert not torch.allclose(policy_after, reference_after)
    unet_after = {k: v for k, v in model.unet.state_dict().items() if "lora" not in k}
    assert all(torch.equal(unet_before[k], unet_after[k]) for k in unet_before)


def test_saved_controlnet_loads_in_plain_diffusers_and_back(dp2o_plugin_manager, tiny_sd, lr, tmp_path):
    model = backbone(dp2o_plugin_manager, tiny_sd, ",color_fix=none")
    model.prepare_training()
    with torch.no_grad():
        for p in model.controlnet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save(tmp_path / "tuned")
    ours = model.sample(lr[:1], [[3]]).images[0, 0]
    torch.save({"lr": model.upsample(lr[:1])}, tmp_path / "control.pt")
    code = f"""
import sys, torch
from diffusers import (AutoencoderKL, ControlNetModel, DDPMScheduler, StableDiffusionControlNetPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextModel, CLIPTokenizer
base = {str(tiny_sd)!r}
pipe = StableDiffusionControlNetPipeline(
    vae=AutoencoderKL.from_pretrained(base, subfolder="vae"),
    text_encoder=CLIPTextModel.from_pretrained(base, subfolder="text_encoder"),
    tokenizer=CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"),
    unet=UNet2DConditionModel.from_pretrained(base, subfolder="unet"),
    controlnet=ControlNetModel.from_pretrained({str(tmp_path / "tuned" / "controlnet")!r}),
    scheduler=DDPMScheduler.from_pretrained(base, subfolder="scheduler"),
    safety_checker=None, feature_extractor=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
control = torch.load({str(tmp_path / "control.pt")!r})["lr"]
image = pipe(prompt="", negative_prompt="dotted, noise, blur, lowres, smooth", image=control,
             num_inference_steps=4, guidance_scale=3.5, generator=torch.Generator().manual_seed(3),
             output_type="pt", height=64, width=64).images[0]
assert "dp2o_core" not in sys.modules and "dp2o_plugins" not in sys.modules
torch.save(image, {str(tmp_path / "stock.pt")!r})
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    stock = torch.load(tmp_path / "stock.pt")
    assert (stock - ours).abs().max() < 1e-4

    for source in ("controlnet", "model.safetensors"):
        reloaded = backbone(
            dp2o_plugin_manager, tiny_sd, f",color_fix=none,controlnet={tmp_path / 'tuned' / source}"
        )
        assert (reloaded.sample(lr[:1], [[3]]).images[0, 0] - ours).abs().max() < 1e-5


def test_colour_fixes_match_the_reference_statistics():
    from dp2o_plugins.backbones.colorfix import adain_color_fix, wavelet_color_fix

    reference = torch.rand(1, 3, 32, 32) * 0.5
    images = torch.rand(2, 3, 32, 32) * 0.5 + 0.4
    fixed = adain_color_fix(images, reference)
    assert torch.allclose(fixed.mean(dim=(2, 3)), reference.mean(dim=(2, 3)).expand(2, 3), atol=1e-3)
    wavelet = wavelet_color_fix(images, reference)
    assert (wavelet.mean() - reference.mean()).abs() < (images.mean() - reference.mean()).abs()


def test_missing_weights_name_the_model_and_the_fix(dp2o_plugin_manager, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Dp2oError) as error:
        resolve_spec(dp2o_plugin_manager, "backbone", "sd2:model=nobody/no-such-model").build()
    message = str(error.value)
    assert "'nobody/no-such-model'" in message and "HF_HUB_OFFLINE" in message and "model=/models/" in message


def test_saved_lora_loads_back_and_reproduces_the_tuned_model(dp2o_plugin_manager, tiny_sd, lr, tmp_path):
    model = backbone(dp2o_plugin_manager, tiny_sd, ",color_fix=none,trainable=lora-unet,lora_rank=4")
    model.prepare_training()
    with torch.no_grad():
        for name, p in model.unet.named_parameters():
            if "lora_" in name:
                p.add_(0.05 * torch.randn_like(p))
    model.unet.eval()
    model.save(tmp_path / "tuned")
    assert (tmp_path / "tuned" / "lora.safetensors").is_file()
    tuned = model.sample(lr[:1], [[2]]).images[0, 0]
    spec = f",color_fix=none,trainable=lora-unet,lora_rank=4,lora={tmp_path / 'tuned' / 'lora.safetensors'}"
    reloaded = backbone(dp2o_plugin_manager, tiny_sd, spec)
    assert (reloaded.sample(lr[:1], [[2]]).images[0, 0] - tuned).abs().max() < 1e-5
    base = backbone(dp2o_plugin_manager, tiny_sd, ",color_fix=none").sample(lr[:1], [[2]]).images[0, 0]
    assert (base - tuned).abs().max() > 1e-4
    with pytest.raises(Dp2oError, match="needs trainable=lora"):
        backbone(dp2o_plugin_manager, tiny_sd, f",lora={tmp_path / 'tuned' / 'lora.safetensors'}")


def test_small_groups_share_a_batch_and_keep_their_own_candidates(dp2o_plugin_manager, tiny_sd, lr):
    """M = 2 below chunk_size = 4: the sample stage passes two groups per call and both groups'
    candidates (each with its own control image and prompt) are denoised in one batch — with the
    images each group gets alone."""
    model = backbone(dp2o_plugin_manager, tiny_sd, ",chunk_size=4")
    assert model.groups_per_call(2) == 2 and model.groups_per_call(4) == 1 and model.groups_per_call(64) == 1
    batches: list[int] = []
    denoise = model._denoise
    model._denoise = lambda prepared, gens: batches.append(len(gens)) or denoise(prepared, gens)
    together = model.sample(lr, [[1, 2], [3, 4]], ["a cat", "sharp photo"])
    assert batches == [4]
    for index, (seeds, prompt) in enumerate([([1, 2], "a cat"), ([3, 4], "sharp photo")]):
        alone = model.sample(lr[index : index + 1], [seeds], [prompt])
        assert torch.allclose(together.images[index], alone.images[0], atol=1e-5)
        assert torch.allclose(together.latents[index], alone.latents[0], atol=1e-5)
    assert batches == [4, 2, 2]


def test_conditioning_scale_reaches_sampling_as_in_the_stock_pipeline(dp2o_plugin_manager, tiny_sd, lr):
    model = backbone(dp2o_plugin_manager, tiny_sd, ",color_fix=none,chunk_size=2,conditioning_scale=0.6")
    torch.manual_seed(5)
    for parameter in [
        *model.controlnet.controlnet_down_blocks.parameters(),
        *model.controlnet.controlnet_mid_block.parameters(),
    ]:
        torch.nn.init.normal_(parameter, std=0.3)  # a new ControlNet's outputs start at zero
    ours = model.sample(lr[:1], [[3, 4]]).images[0]
    for index, seed in enumerate((3, 4)):
        assert (
            stock_image(model, lr[:1], seed, controlnet_conditioning_scale=0.6) - ours[index]
        ).abs().max() < 1e-4
    # the scale matters
    assert (stock_image(model, lr[:1], 3, controlnet_conditioning_scale=1.0) - ours[0]).abs().max() > 1e-3
