"""``sd-upscaler`` (alias ``sd-x4``): Stable Diffusion's ×4 upscaler, diffusers'
``StableDiffusionUpscalePipeline`` models, as a backbone to sample and preference-tune.

Its UNet denoises 4-channel latents of the LR image's size and reads the LR itself as three
more input channels: the LR in [−1, 1], noised by the model's ``low_res_scheduler`` at
``noise_level`` (default 20), which is also the UNet's class label. Its VAE decodes the
latents ×4 (scaling factor 0.08333, decoded in float32). Sampling runs the pipeline's
computation — DDIM (the model's scheduler), classifier-free guidance 9, 75 steps — for a
whole chunk of candidates in one batch, each with its own generator drawing, as the pipeline
does for one seed, first the LR's noise and then the initial latents; so candidate m equals
the pipeline called with seed m.

Training: the objective's x₀ is the VAE posterior mean of a candidate × the scaling factor;
the condition cached per group is the noised LR (its noise drawn once per group from a fixed
seed, so a pair's winner and loser see the same one) and the noise level; the target follows
the scheduler's ``prediction_type`` (v for the released model). The whole UNet is trained;
the reference is a frozen copy. ``save`` writes a complete pipeline folder that
``StableDiffusionUpscalePipeline.from_pretrained`` loads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from dp2o_plugins.backbones.loading import load_component, resolve_device
from dp2o_plugins.backbones.prompts import ClipPrompts
from dp2o_plugins.backbones.targets import SchedulerTraining
from dp2o_plugins.backbones.vae_tiles import vae_tiles
from dp2o_plugins.backbones.whole_unet import (
    PipelineFolderModel,
    PipelineFolderOptions,
    WholeUnetTraining,
    sample_in_chunks,
)
from pydantic import Field

from dp2o_core import Backbone, SampleResult
from dp2o_core.tiling import blend_tiles, plan_model_windows

#: The seed of the noise added to the LR image in training's cached condition.
CONDITION_SEED = 0


class SdUpscalerOptions(PipelineFolderOptions):
    """Where the weights come from and how candidates are sampled."""

    model: str = Field(
        "stabilityai/stable-diffusion-x4-upscaler",
        description="Hub id or local folder of a StableDiffusionUpscalePipeline model (unet/, vae/, "
        "scheduler/, low_res_scheduler/, tokenizer/, text_encoder/).",
    )
    steps: int = Field(75, ge=1, description="Denoising steps (the pipeline's default: 75).")
    guidance_scale: float = Field(9.0, ge=0, description="Classifier-free guidance (≤ 1: none).")
    noise_level: int = Field(
        20, ge=0, description="Noise added to the LR image, also the UNet's class label."
    )
    prompt: str = Field("", description="Prompt for every image that has no prompt of its own.")
    negative_prompt: str = Field("", description="Negative prompt for guidance.")
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="Precision of the UNet.")


class SdUpscalerBackbone(ClipPrompts, SchedulerTraining, WholeUnetTraining, PipelineFolderModel, Backbone):
    """Stable Diffusion ×4 upscaler: LR-sized latents, the noised LR concatenated, v-prediction."""

    name = "sd-upscaler"
    Options = SdUpscalerOptions
    model_parts = ("unet", "vae", "scheduler", "low_res_scheduler", "tokenizer", "text_encoder")

    def __init__(self, options=None) -> None:
        super().__init__(options)
        import torch
        from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel

        o = self.options
        self.device = resolve_device(o.device)
        self.dtype = getattr(torch, o.dtype)
        self._prompt_cache: dict[str, dict[str, Any]] = {}
        self._text = None
        self.unet = load_component(UNet2DConditionModel, o.model, "unet")
        self.vae = load_component(AutoencoderKL, o.model, "vae")
        self.scheduler = load_component(DDIMScheduler, o.model, "scheduler")
        self.low_res_scheduler = load_component(DDPMScheduler, o.model, "low_res_scheduler")
        self.unet.to(self.device, self.dtype).eval().requires_grad_(False)
        self.vae.to(self.device, torch.float32).eval().requires_grad_(False)  # decoded in float32
        self.scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.load_adapters()

    # -- sampling ------------------------------------------------------------------------------
    def sample(
        self, lr, seeds: Sequence[Sequence[int]], prompts: Sequence[str] | None = None
    ) -> SampleResult:
        """M candidates per LR image, ``chunk_size`` at a time, one generator per candidate."""
        import torch

        def prepare(index: int):
            text = prompts[index] if prompts and prompts[index] else self.options.prompt
            return lr[index : index + 1].to(self.device) * 2 - 1, text

        stacked = sample_in_chunks(
            seeds,
            self.options.chunk_size,
            self.device,
            prepare,
            lambda prepared, generators: self._denoise(prepared[0], prepared[1], generators),
        )
        with torch.no_grad():
            latents = torch.stack([self.encode(group).float().cpu() for group in stacked])
        return SampleResult(images=stacked, seeds=[list(s) for s in seeds], latents=latents)

    def _denoise(self, image, text: str, generators: list):
        """The pipeline's loop for one chunk of candidates of one LR image (in [−1, 1])."""
        import torch
        from diffusers import DDIMScheduler
        from diffusers.utils.torch_utils import randn_tensor

        n = len(generators)
        guided = self.options.guidance_scale > 1
        embeds = self.cached_prompt(text)["prompt_embeds"].expand(n, -1, -1)
        if guided:
            negative = self.cached_prompt(self.options.negative_prompt)["prompt_embeds"].expand(n, -1, -1)
            embeds = torch.cat([negative, embeds])
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(self.options.steps, device=self.device)
        # each generator draws the LR's noise first, then the latents: the pipeline's order
        lr_noise = randn_tensor(
            (n, *image.shape[1:]), generator=generators, device=self.device, dtype=self.dtype
        )
        level = torch.full((n,), self.options.noise_level, dtype=torch.long, device=self.device)
        noised = self.low_res_scheduler.add_noise(image.to(self.dtype).expand(n, -1, -1, -1), lr_noise, level)
        channels = self.vae.config.latent_channels
        latents = randn_tensor(
            (n, channels, *image.shape[-2:]), generator=generators, device=self.device, dtype=self.dtype
        )
        latents = latents * scheduler.init_noise_sigma
        copies = 2 if guided else 1
        conditioning, labels = torch.cat([noised] * copies), torch.cat([level] * copies)
        windows = self.windows(*latents.shape[-2:])
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents] * copies), t)
            model_input = torch.cat([model_input, conditioning], dim=1)

            def output_of(window, model_input=model_input, t=t):
                return self.unet(
                    window.of(model_input),
                    t,
                    encoder_hidden_states=embeds,
                    class_labels=labels,
                    return_dict=False,
                )[0]

            output = blend_tiles(output_of, model_input[:, :channels], windows)
            if guided:
                uncond, cond = output.chunk(2)
                output = uncond + self.options.guidance_scale * (cond - uncond)
            latents = scheduler.step(
                output, t, latents, eta=self.options.eta, generator=generators, return_dict=False
            )[0]
        with vae_tiles(self.vae, len(windows) > 1, self.options.tile, self.scale):
            decoded = self.vae.decode(latents.float() / self.vae.config.scaling_factor, return_dict=False)[0]
        return (decoded / 2 + 0.5).clamp(0, 1)

    def windows(self, height: int, width: int) -> list:
        """The latent tiles (latents are the LR's size) of a ``height`` × ``width`` latent: one,
        all of it, when the output fits the ``tile`` option; on the UNet's grid of 8."""
        o = self.options
        grid = 2 ** (len(self.unet.config.block_out_channels) - 1)
        return plan_model_windows(height, width, o.tile, o.overlap, pixels_per_unit=self.scale, grid=grid)

    # -- training ------------------------------------------------------------------------------
    def encode(self, images):
        """Images in [0, 1] → VAE latents (posterior mean × scaling factor), ¼ of their size."""
        tiled = len(self.windows(images.shape[-2] // self.scale, images.shape[-1] // self.scale)) > 1
        with vae_tiles(self.vae, tiled, self.options.tile, self.scale):
            posterior = self.vae.encode(images.to(self.device, self.vae.dtype) * 2 - 1).latent_dist
        return posterior.mean * self.vae.config.scaling_factor

    def encode_condition(self, lr) -> Mapping[str, Any]:
        """The noised LR (noise from a fixed seed, the same every time for a group) and its level."""
        import torch

        image = lr.to(self.device, torch.float32) * 2 - 1
        generator = torch.Generator().manual_seed(CONDITION_SEED)
        noise = torch.randn(image.shape, generator=generator).to(self.device)
        level = torch.full((image.shape[0],), self.options.noise_level, dtype=torch.long, device=self.device)
        return {
            "noised_lr": self.low_res_scheduler.add_noise(image, noise, level),
            "noise_level": level.float(),
        }

    def predict(self, x_t, timesteps, condition: Mapping[str, Any], *, reference: bool = False):
        """The policy's (or frozen reference's) UNet output on x_t and the noised LR."""
        import torch

        unet = self.policy_or_reference(reference)
        model_input = torch.cat([x_t, condition["noised_lr"].to(x_t.dtype)], dim=1).to(self.dtype)
        return unet(
            model_input,
            timesteps,
            encoder_hidden_states=condition["prompt_embeds"].to(self.dtype),
            class_labels=condition["noise_level"].long(),
            return_dict=False,
        )[0]

    def release_image_encoder(self) -> None:
        """Drop the VAE encoder (its decoder stays, so the model still samples)."""
        self.vae.encoder = None
        self.vae.quant_conv = None

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """A complete ``StableDiffusionUpscalePipeline`` folder: the trained UNet with the
        model's other parts (``from_pretrained`` loads it; ``model=DIR`` samples with it) — or,
        when LoRA adapters were trained, only them (``lora.safetensors``)."""
        if self.saved_adapters(directory):
            return
        from diffusers import AutoencoderKL, StableDiffusionUpscalePipeline

        tokenizer, encoder = self._text_encoder()
        vae = self.vae
        if vae.encoder is None:  # released for training: the folder needs a whole VAE
            vae = load_component(AutoencoderKL, self.options.model, "vae")
        pipeline = StableDiffusionUpscalePipeline(
            vae=vae,
            text_encoder=encoder,
            tokenizer=tokenizer,
            unet=self.unet,
            low_res_scheduler=self.low_res_scheduler,
            scheduler=self.scheduler,
        )
        pipeline.save_pretrained(Path(directory), safe_serialization=True)
