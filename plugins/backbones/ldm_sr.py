"""``ldm-sr``: latent-diffusion super-resolution, diffusers' ``LDMSuperResolutionPipeline`` models
(``CompVis/ldm-super-resolution-4x-openimages`` and the like), as a backbone.

No text: the UNet denoises latents of the LR image's size with the LR itself (in [−1, 1]) as
more input channels, and the VQ autoencoder decodes the latents ×4 (quantising them first).
Sampling runs the pipeline's computation — its scheduler (DDIM), 100 steps, η — for a whole
chunk of candidates in one batch, each candidate's generator drawing its initial latents as
the pipeline's does for one seed, so candidate m equals the pipeline called with seed m. (The
pipeline draws DDIM's per-step noise at η > 0 from torch's global generator; here each
candidate's own generator draws it, so candidates stay reproducible per seed at any η.)

Training: x₀ is the VQ encoder's latents of a candidate (before quantisation), the condition
is the LR image, the target follows the scheduler's ``prediction_type`` (ε for the released
model); the whole UNet is trained against a frozen copy, or LoRA adapters on its attention
(``trainable=lora-unet``); ``save`` writes a pipeline folder
``LDMSuperResolutionPipeline.from_pretrained`` loads (or the adapters).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dp2o_plugins.backbones.loading import load_component, resolve_device
from dp2o_plugins.backbones.targets import SchedulerTraining
from dp2o_plugins.backbones.whole_unet import (
    PipelineFolderModel,
    PipelineFolderOptions,
    WholeUnetTraining,
    sample_in_chunks,
)
from pydantic import Field

from dp2o_core import Backbone, SampleResult
from dp2o_core.imageio import pad_to_multiple
from dp2o_core.tiling import blend_tiles, plan_model_windows


class LdmSrOptions(PipelineFolderOptions):
    """Where the weights come from and how candidates are sampled."""

    model: str = Field(
        "CompVis/ldm-super-resolution-4x-openimages",
        description="Hub id or local folder of an LDMSuperResolutionPipeline model "
        "(unet/, vqvae/, scheduler/).",
    )
    steps: int = Field(100, ge=1, description="Denoising steps (the pipeline's default: 100).")


class LdmSrBackbone(SchedulerTraining, WholeUnetTraining, PipelineFolderModel, Backbone):
    """Latent-diffusion SR: LR-sized latents with the LR concatenated, a VQ decoder ×4, no text."""

    name = "ldm-sr"
    Options = LdmSrOptions
    model_parts = ("unet", "vqvae", "scheduler")

    def __init__(self, options=None) -> None:
        super().__init__(options)
        from diffusers import DDIMScheduler, UNet2DModel, VQModel

        o = self.options
        self.device = resolve_device(o.device)
        self.unet = load_component(UNet2DModel, o.model, "unet").to(self.device).eval().requires_grad_(False)
        self.vqvae = load_component(VQModel, o.model, "vqvae").to(self.device).eval().requires_grad_(False)
        self.scheduler = load_component(DDIMScheduler, o.model, "scheduler")
        self.scale = 2 ** (len(self.vqvae.config.block_out_channels) - 1)
        self.load_adapters()

    # -- sampling ------------------------------------------------------------------------------
    def sample(
        self, lr, seeds: Sequence[Sequence[int]], prompts: Sequence[str] | None = None
    ) -> SampleResult:
        """M candidates per LR image, ``chunk_size`` at a time, one generator per candidate
        (prompts are ignored: the model reads no text)."""
        import torch

        height, width = lr.shape[-2] * self.scale, lr.shape[-1] * self.scale
        stacked = sample_in_chunks(
            seeds,
            self.options.chunk_size,
            self.device,
            lambda b: pad_to_multiple(lr[b : b + 1].to(self.device), self.grid) * 2 - 1,
            lambda image, generators: self._denoise(image, generators)[..., :height, :width],
        )
        with torch.no_grad():
            latents = torch.stack([self.encode(group).float().cpu() for group in stacked])
        return SampleResult(images=stacked, seeds=[list(s) for s in seeds], latents=latents)

    def _denoise(self, image, generators: list):
        """The pipeline's loop for one chunk of candidates of one LR image (in [−1, 1])."""
        import torch
        from diffusers import DDIMScheduler
        from diffusers.utils.torch_utils import randn_tensor

        n = len(generators)
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(self.options.steps, device=self.device)
        shape = (n, self.unet.config.in_channels // 2, *image.shape[-2:])
        latents = randn_tensor(shape, generator=generators, device=self.device) * scheduler.init_noise_sigma
        condition = image.expand(n, -1, -1, -1)
        windows = self.windows(*latents.shape[-2:])
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents, condition], dim=1), t)

            def noise_of(window, model_input=model_input, t=t):
                return self.unet(window.of(model_input), t).sample

            noise = blend_tiles(noise_of, latents, windows)
            latents = scheduler.step(
                noise, t, latents, eta=self.options.eta, generator=generators
            ).prev_sample
        decoded = self.vqvae.decode(latents).sample
        return (decoded.clamp(-1, 1) / 2 + 0.5).float()

    @property
    def grid(self) -> int:
        """What the UNet's input sides must be multiples of (it halves them at each level but the
        last): an LR of other sides is padded to it and the output cropped back, so any input
        gives exactly ``scale`` × its size."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    def windows(self, height: int, width: int) -> list:
        """The latent tiles (latents are the LR's size): one, all of it, when the output fits the
        ``tile`` option; on the UNet's grid."""
        o = self.options
        return plan_model_windows(
            height, width, o.tile, o.overlap, pixels_per_unit=self.scale, grid=self.grid
        )

    # -- training ------------------------------------------------------------------------------
    def encode(self, images):
        """Images in [0, 1] → the VQ encoder's latents (before quantisation), ¼ of their size."""
        return self.vqvae.encode(images.to(self.device) * 2 - 1).latents

    def encode_condition(self, lr) -> Mapping[str, Any]:
        """The LR image in [−1, 1]."""
        return {"lr": lr.to(self.device) * 2 - 1}

    def predict(self, x_t, timesteps, condition: Mapping[str, Any], *, reference: bool = False):
        """The policy's (or frozen reference's) UNet output on x_t and the LR."""
        import torch

        unet = self.policy_or_reference(reference)
        model_input = pad_to_multiple(torch.cat([x_t, condition["lr"].to(x_t.dtype)], dim=1), self.grid)
        return unet(model_input, timesteps).sample[..., : x_t.shape[-2], : x_t.shape[-1]]

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """A complete ``LDMSuperResolutionPipeline`` folder with the trained UNet (with LoRA:
        ``lora.safetensors``, applied with ``lora=``)."""
        if self.saved_adapters(directory):
            return
        from diffusers import LDMSuperResolutionPipeline

        pipeline = LDMSuperResolutionPipeline(vqvae=self.vqvae, unet=self.unet, scheduler=self.scheduler)
        pipeline.save_pretrained(Path(directory), safe_serialization=True)
