"""Tiny Stable-Diffusion-style models built from config and saved in the hub folder layout.

Tests load them through the same ``from_pretrained`` paths as real weights; nothing is
downloaded.
"""

from __future__ import annotations

from pathlib import Path


def tiny_clip_tokenizer():
    """A CLIP tokenizer with a handful of words, built in memory."""
    from transformers import CLIPTokenizer

    words = ["a", "cat", "photo", "sharp", "dotted", "noise", "blur", "lowres", "smooth", ","]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for word in words:
        vocab[f"{word}</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    tokenizer.model_max_length = 16
    return tokenizer


def tiny_vae(**config):
    """A four-block VAE: latents are 1/8 of the image, as in SD and FLUX and as the ControlNets'
    conditioning embeddings expect."""
    from diffusers import AutoencoderKL

    defaults = dict(
        block_out_channels=(16, 16, 32, 32),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )
    return AutoencoderKL(**{**defaults, **config})


def tiny_clip_text_encoder(width: int, layers: int):
    """A CLIP text encoder ``width`` wide and ``layers`` deep, for the tiny tokenizer's ids."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=64,
            hidden_size=width,
            intermediate_size=4 * width,
            num_hidden_layers=layers,
            num_attention_heads=4,
            max_position_embeddings=16,
            projection_dim=32,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )


def stock_pipeline(backbone):
    """The stock diffusers pipeline over a dp2o backbone's own modules (for equality checks)."""
    from diffusers import FluxControlNetPipeline, StableDiffusionControlNetPipeline

    if backbone.name == "sd2-controlnet":
        tokenizer, encoder = backbone._text_encoder()
        pipe = StableDiffusionControlNetPipeline(
            vae=backbone.vae,
            text_encoder=encoder,
            tokenizer=tokenizer,
            unet=backbone.unet,
            controlnet=backbone.controlnet,
            scheduler=backbone.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    else:
        backbone._attach_text_encoders()
        p = backbone.pipe
        pipe = FluxControlNetPipeline(
            scheduler=backbone.scheduler,
            vae=backbone.vae,
            text_encoder=p.text_encoder,
            tokenizer=p.tokenizer,
            text_encoder_2=p.text_encoder_2,
            tokenizer_2=p.tokenizer_2,
            transformer=backbone.transformer,
            controlnet=backbone.controlnet,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def stock_sample(pipe, model, lr, seed: int, steps: int, **extra):
    """One image (3×H×W in [0, 1]) of the stock diffusers ``pipe`` for the LR image ``lr``,
    driven as the dp2o backbone ``model`` samples by default — its control image, prompt "",
    guidance — with the generator seeded ``seed``; ``extra`` adds or overrides arguments."""
    import torch

    arguments: dict = {"num_inference_steps": steps, "output_type": "pt", "prompt": ""}
    if model.name == "sd-upscaler":
        arguments |= {"image": lr, "guidance_scale": model.options.guidance_scale}
    elif model.name == "ldm-sr":
        arguments = {"image": lr * 2 - 1, "num_inference_steps": steps, "output_type": "pt"}  # no text
    else:
        control = model.upsample(lr)
        arguments |= {"height": control.shape[-2], "width": control.shape[-1]}
        if model.name == "sd2-controlnet":
            negative = model.options.negative_prompt
            arguments |= {"image": control, "negative_prompt": negative, "guidance_scale": 3.5}
        else:  # FLUX: a tensor reaches the VAE as it is, so in [-1, 1]
            arguments |= {"control_image": control * 2 - 1, "guidance_scale": 2.5, "max_sequence_length": 8}
    generator = torch.Generator().manual_seed(seed)
    return pipe(**(arguments | extra), generator=generator).images[0]


def sd_scheduler(prediction_type: str = "epsilon"):
    """Stable Diffusion 2's DDPM training schedule (scaled-linear betas, 1000 steps)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=prediction_type,
        clip_sample=False,
    )


def flux_scheduler():
    """FLUX.1's flow-matching Euler schedule with resolution-dependent shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def save_tiny_sd(
    folder: Path,
    prediction_type: str = "epsilon",
    channels: tuple[int, ...] = (32, 64),
    layers: int = 1,
    text_width: int = 32,
    text_layers: int = 1,
    vae: dict | None = None,
) -> Path:
    """Write unet/, vae/, scheduler/, text_encoder/, tokenizer/ of a tiny SD model to ``folder``.

    ``channels``, ``layers``, the text encoder's width and depth and ``vae`` (AutoencoderKL
    config overrides) size the model (benchmarks use SD-like proportions).
    """
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    down = ("CrossAttnDownBlock2D",) * (len(channels) - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (len(channels) - 1)
    unet = UNet2DConditionModel(
        block_out_channels=channels,
        layers_per_block=layers,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=text_width,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    vae = tiny_vae(**(vae or {}))
    scheduler = sd_scheduler(prediction_type)
    text = tiny_clip_text_encoder(text_width, text_layers)
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    scheduler.save_pretrained(folder / "scheduler")
    text.save_pretrained(folder / "text_encoder")
    tiny_clip_tokenizer().save_pretrained(folder / "tokenizer")
    return folder


def save_tiny_flux(
    folder: Path,
    layers: int = 1,
    single_layers: int = 1,
    vae: dict | None = None,
    heads: int = 2,
    text_width: int = 32,
    text_layers: int = 1,
) -> Path:
    """Write transformer/, vae/, scheduler/, text encoders and tokenizers of a tiny FLUX model
    (``vae``: AutoencoderKL config overrides; ``heads`` × 16 is the transformer's width;
    ``text_width``/``text_layers`` size the CLIP and T5 encoders)."""
    import torch
    from diffusers import FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=layers,
        num_single_layers=single_layers,
        attention_head_dim=16,
        num_attention_heads=heads,
        joint_attention_dim=text_width,
        pooled_projection_dim=text_width,
        guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),
    )
    vae = tiny_vae(
        **{
            "shift_factor": 0.1,
            "scaling_factor": 0.5,
            "use_quant_conv": False,
            "use_post_quant_conv": False,
            **(vae or {}),
        }
    )
    scheduler = flux_scheduler()
    clip = tiny_clip_text_encoder(text_width, text_layers)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=32,
            d_model=text_width,
            d_kv=8,
            d_ff=2 * text_width,
            num_layers=text_layers,
            num_heads=4,
        )
    )
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(f"▁{w}", -1.0) for w in ("a", "cat", "photo", "sharp")] + [(c, -2.0) for c in "abcdefghij"]
    transformer.save_pretrained(folder / "transformer")
    vae.save_pretrained(folder / "vae")
    scheduler.save_pretrained(folder / "scheduler")
    clip.save_pretrained(folder / "text_encoder")
    tiny_clip_tokenizer().save_pretrained(folder / "tokenizer")
    t5.save_pretrained(folder / "text_encoder_2")
    T5Tokenizer(vocab=pieces).save_pretrained(folder / "tokenizer_2")
    return folder


def save_tiny_upscaler(folder: Path, channels: tuple[int, ...] = (32, 64), text_width: int = 32) -> Path:
    """A tiny ``StableDiffusionUpscalePipeline`` folder (unet/ with 7 input channels and class
    labels for the noise level, a three-block VAE — ×4 — with the upscaler's scaling factor,
    a v-prediction DDIM scheduler, the low_res_scheduler, CLIP text encoder and tokenizer),
    saved by the pipeline itself so its model_index.json is the real one. ``channels``: the
    UNet's widths (cross-attention in every block but the last)."""
    import torch
    from diffusers import StableDiffusionUpscalePipeline, UNet2DConditionModel

    torch.manual_seed(0)
    down = ("CrossAttnDownBlock2D",) * (len(channels) - 1) + ("DownBlock2D",)
    unet = UNet2DConditionModel(
        block_out_channels=channels,
        layers_per_block=1,
        sample_size=16,
        in_channels=7,
        out_channels=4,
        down_block_types=down,
        up_block_types=tuple(t.replace("Down", "Up") for t in reversed(down)),
        cross_attention_dim=text_width,
        attention_head_dim=8,
        norm_num_groups=16,
        num_class_embeds=1000,
    )
    vae = tiny_vae(
        block_out_channels=(16, 16, 32),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        scaling_factor=0.08333,
    )
    scheduler, low_res_scheduler = upscaler_schedulers()
    pipeline = StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=tiny_clip_text_encoder(text_width, 1),
        tokenizer=tiny_clip_tokenizer(),
        unet=unet,
        low_res_scheduler=low_res_scheduler,
        scheduler=scheduler,
    )
    pipeline.save_pretrained(folder)
    return folder


def upscaler_schedulers():
    """The ×4 upscaler's schedules: DDIM with v-prediction for the latents and DDPM for the LR's
    noise, both over its 0.0001–0.02 scaled-linear betas."""
    from diffusers import DDIMScheduler, DDPMScheduler

    schedule = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02)
    scheduler = DDIMScheduler(
        **schedule, prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )
    return scheduler, DDPMScheduler(**schedule)


def save_tiny_ldm_sr(folder: Path, channels: tuple[int, ...] = (32, 64)) -> Path:
    """A tiny ``LDMSuperResolutionPipeline`` folder: a UNet2DModel reading 3 latent + 3 LR
    channels (widths ``channels``, attention in the last block), a three-block VQ autoencoder
    (×4), a DDIM scheduler; saved by the pipeline."""
    import torch
    from diffusers import DDIMScheduler, LDMSuperResolutionPipeline, UNet2DModel, VQModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=16,
        in_channels=6,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=channels,
        down_block_types=("DownBlock2D",) * (len(channels) - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (len(channels) - 1),
        norm_num_groups=16,
    )
    vqvae = VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 16, 32),
        layers_per_block=1,
        latent_channels=3,
        num_vq_embeddings=64,
        norm_num_groups=8,
    )
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    LDMSuperResolutionPipeline(vqvae=vqvae, unet=unet, scheduler=scheduler).save_pretrained(folder)
    return folder
