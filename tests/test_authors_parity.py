"""dp2o's SD2 and FLUX candidates are the images the DP²O-SR authors' scripts make: the stock
diffusers pipeline fed the LR enlarged ×4 by Pillow's bicubic (an 8-bit PIL image) — small
inputs enlarged first, sides rounded down to the grid —, its 8-bit output colour-fixed by AdaIN
with std = sqrt(unbiased variance + 1e-5), truncated to 8 bits and resized back to 4× the LR."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import save_tiny_flux, save_tiny_sd, stock_pipeline

from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {"sd2": save_tiny_sd(folder / "sd"), "flux": save_tiny_flux(folder / "flux")}


def trained_backbone(name, folder, extra=""):
    """A backbone whose ControlNet is not the zero-output one ``new`` makes, so the control
    image decides the output."""
    steps = 3
    options = f"model={folder},steps={steps},device=cpu,controlnet=new{extra}"
    if name == "flux":
        options += ",max_sequence_length=8"
    backbone = resolve_spec(PluginManager(), "backbone", f"{name}:{options}").build()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in backbone.controlnet.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return backbone


def eight_bit_lr(height, width):
    """An LR image as the data stage stores it (8-bit levels), as a tensor and as PIL."""
    array = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255, Image.fromarray(array)


def authors_adain(output: Image.Image, control: Image.Image) -> np.ndarray:
    """The authors' AdaIN colour fix (StableSR's), on 8-bit PIL images, truncated to 8 bits
    as torchvision's ToPILImage does."""

    def tensor(image):
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255

    def stats(x):
        flat = x.reshape(1, 3, -1)
        return flat.mean(dim=2).view(1, 3, 1, 1), (flat.var(dim=2) + 1e-5).sqrt().view(1, 3, 1, 1)

    content, style = tensor(output), tensor(control)
    (content_mean, content_std), (style_mean, style_std) = stats(content), stats(style)
    fixed = ((content - content_mean) / content_std * style_std + style_mean).clamp(0, 1)
    return (fixed[0] * 255).byte().permute(1, 2, 0).numpy()


def stock_output(backbone, name, control: Image.Image, seed: int) -> Image.Image:
    width, height = control.size
    pipe = stock_pipeline(backbone)
    common = dict(
        prompt="",
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(seed),
        output_type="pil",
        height=height,
        width=width,
    )
    if name == "sd2":  # the control image passed as PIL, as test_sd2b_controlnet.py does
        return pipe(
            image=control, negative_prompt=backbone.options.negative_prompt, guidance_scale=3.5, **common
        ).images[0]
    # FLUX: as a tensor in [-1, 1], as test_flux_controlnet.py does
    as_tensor = torch.from_numpy(np.asarray(control).copy()).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    return pipe(control_image=as_tensor, guidance_scale=2.5, max_sequence_length=8, **common).images[0]


#: The scripts' process_size, scaled down with the tiny models: an LR side below 64 // 4 = 16
#: is enlarged first.
PROCESS_SIZE = 64


def authors_control(lr_image: Image.Image, grid: int, upscale: int = 4) -> Image.Image:
    """The scripts' control image: a small input enlarged to a short side of
    process_size // upscale, then ×upscale, then its sides rounded down to ``grid`` —
    Image.resize's default filter (bicubic) every time."""
    width, height = lr_image.size
    image = lr_image
    if width < PROCESS_SIZE // upscale or height < PROCESS_SIZE // upscale:
        factor = (PROCESS_SIZE // upscale) / min(width, height)
        image = image.resize((int(factor * width), int(factor * height)))
    image = image.resize((image.size[0] * upscale, image.size[1] * upscale))
    return image.resize((image.size[0] // grid * grid, image.size[1] // grid * grid))


@pytest.mark.parametrize("name", ["sd2", "flux"])
@pytest.mark.parametrize(
    ("upscale", "size"),
    [(4, (16, 16)), (4, (16, 32)), (4, (17, 19)), (4, (12, 20)), (1, (64, 80)), (1, (70, 66))],
)
def test_candidates_are_the_authors_images(models, name, upscale, size):
    """Square and non-square on the grid; off the grid (sides rounded down, output resized back);
    small (enlarged first). FLUX's grid is 16 (its script assumes square 512-px inputs).
    ``upscale=1``: an LR stored at the output size (RealSR's) is the control image itself, as
    the scripts' default ``--upscale 1`` takes it."""
    extra = f",color_fix=adain,process_size={PROCESS_SIZE},upscale={upscale}"
    backbone = trained_backbone(name, models[name], extra)
    lr, lr_image = eight_bit_lr(*size)
    control = authors_control(lr_image, grid=8 if name == "sd2" else 16, upscale=upscale)
    assert np.array_equal(
        np.asarray(control), (backbone.upsample(lr)[0] * 255).round().byte().permute(1, 2, 0).numpy()
    )
    ours = backbone.sample(lr, [[5]]).images[0, 0]
    assert ours.shape == (3, size[0] * upscale, size[1] * upscale)
    ours_8bit = (ours * 255).round().byte().permute(1, 2, 0).numpy().astype(int)
    fixed = Image.fromarray(authors_adain(stock_output(backbone, name, control, seed=5), control))
    theirs = np.asarray(fixed.resize((size[1] * upscale, size[0] * upscale))).astype(int)  # resized back
    difference = np.abs(ours_8bit - theirs)
    # our PNGs round where ToPILImage truncates: one grey level apart; two only in the odd pixel
    # where batched and one-by-one sampling round the pipeline's own 8-bit output differently
    assert (difference <= 1).mean() > 0.999 and difference.max() <= 2, np.bincount(difference.ravel())


@pytest.mark.parametrize("name", ["sd2", "flux"])
def test_the_control_image_decides_the_output(models, name):
    """Torch's bicubic (a = −0.75) instead of Pillow's (a = −0.5) gives another image: matching
    the scripts' control image is not a formality."""
    backbone = trained_backbone(name, models[name], f",color_fix=adain,process_size={PROCESS_SIZE}")
    lr, lr_image = eight_bit_lr(16, 16)
    control = authors_control(lr_image, grid=16)
    theirs = authors_adain(stock_output(backbone, name, control, seed=5), control).astype(int)
    torch_control = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic").clamp(0, 1)
    torch_image = Image.fromarray((torch_control[0] * 255).round().byte().permute(1, 2, 0).numpy())
    other = authors_adain(stock_output(backbone, name, torch_image, seed=5), control).astype(int)
    assert np.abs(other - theirs).max() > 1


@pytest.mark.parametrize("name", ["sd2", "flux"])
def test_exact_geometry_samples_at_four_times_the_input_without_resampling(models, name):
    """geometry=exact: an off-grid input is padded and cropped, a small one sampled at its size."""
    backbone = trained_backbone(name, models[name], ",color_fix=none,geometry=exact")
    lr, _ = eight_bit_lr(9, 13)
    control = backbone.upsample(lr)
    grid = backbone.size_multiple
    assert control.shape[-2] % grid == 0 and control.shape[-1] % grid == 0 and control.shape[-2] < 64
    assert backbone.sample(lr, [[5]]).images.shape == (1, 1, 3, 36, 52)


@pytest.mark.parametrize("name", ["sd2", "flux"])
def test_training_sees_the_geometry_sampling_used(models, name):
    """A small input's candidates are written at 4× the LR, but their latents — and the LR's
    control condition — are at the working size the networks sampled at, so they fit."""
    from dp2o_core.training.objective import pair_errors

    backbone = trained_backbone(name, models[name], f",color_fix=adain,process_size={PROCESS_SIZE}")
    lr, _ = eight_bit_lr(12, 20)
    result = backbone.sample(lr, [[5, 6]])
    assert result.images.shape[-2:] == (48, 80)
    working = (64, 104) if name == "sd2" else (64, 96)
    assert tuple(backbone.upsample(lr).shape[-2:]) == working
    x0 = result.latents[0]
    assert torch.allclose(backbone.encode(result.images[0]).float().cpu(), x0, atol=1e-5)
    condition = {**backbone.encode_condition(lr), **backbone.encode_prompts([""])}
    backbone.prepare_training()
    timesteps = backbone.sample_timesteps(1, generator=torch.Generator().manual_seed(0))
    errors = pair_errors(backbone, x0[:1], x0[1:], condition, timesteps, torch.randn_like(x0[:1]))
    assert torch.isfinite(errors.policy_winner).all() and torch.isfinite(errors.reference_loser).all()


@pytest.mark.parametrize("name", ["sd2", "flux"])
def test_the_preflight_knows_the_upscale_before_the_backbone_is_built(models, name):
    """The disk estimate and the metrics' size check read the factor from the options (nothing
    loaded); the built backbone has the same."""
    for upscale in (1, 4):
        resolved = resolve_spec(
            PluginManager(), "backbone", f"{name}:model={models[name]},controlnet=new,upscale={upscale}"
        )
        assert resolved.registration.cls.output_scale(resolved.options) == upscale
    assert resolved.build().scale == 4
    from dp2o_plugins.backbones.tiny_sr.backbone import TinySrBackbone

    assert (
        TinySrBackbone.output_scale(TinySrBackbone.Options()) == TinySrBackbone.scale == 4
    )  # the class attribute
