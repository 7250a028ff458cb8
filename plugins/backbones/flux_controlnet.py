"""C-FLUX: FLUX.1 with a FLUX ControlNet on the VAE latents of the upsampled LR (docs/method.md §7).

Sampling runs the computation of diffusers' ``FluxControlNetPipeline`` called once per
seed — FlowMatch Euler, 25 steps, guidance embedding 2.5, packed latents, CLIP + T5 prompts —
for a chunk of candidates at once, using the pipeline's own helpers for packing, latent ids
and the timestep shift. The LR image is VAE-encoded once per group; each candidate's
generator draws its control-latent sample and its initial noise, as the pipeline does.

Training side: flow matching, x_t = (1 − s)·x₀ + s·ε and target ε − x₀ ("we replace the
predicted noise with velocity"); s drawn logit-normal (diffusers' FLUX recipe) or uniform,
optionally restricted to a range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from dp2o_plugins.backbones.controlnet_base import ControlNetBackbone, ControlNetOptions, batch_rows
from dp2o_plugins.backbones.controlnet_files import describe_state_dict, flux_block_counts, is_flux_controlnet
from dp2o_plugins.backbones.loading import load_component
from pydantic import Field, model_validator

from dp2o_core import runtime_option, training_option
from dp2o_core.tiling import blend_tiles


class FluxControlNetOptions(ControlNetOptions):
    """Where the weights come from, how candidates are sampled, how timesteps are drawn."""

    model: str = Field(
        "black-forest-labs/FLUX.1-dev", description="Hub id or local folder of the FLUX model."
    )
    steps: int = Field(25, ge=1, description="Euler steps (paper: 25).")
    guidance_scale: float = Field(2.5, ge=0, description="Guidance embedding value (paper: 2.5).")
    max_sequence_length: int = Field(512, ge=1, description="T5 prompt length in tokens.")
    controlnet_layers: int = Field(
        4, ge=0, description="Double-stream blocks of a ControlNet made new or read from a file (C-FLUX: 4)."
    )
    controlnet_single_layers: int = Field(
        0, ge=0, description="Single-stream blocks of such a ControlNet (C-FLUX: 0)."
    )
    chunk_size: int = runtime_option(
        4, ge=1, description="Candidates denoised together in one batch (bounds memory)."
    )
    timestep_sampling: Literal["logit-normal", "uniform"] = training_option(
        "logit-normal",
        description="Training distribution of s ∈ (0, 1): logit-normal (diffusers) or uniform.",
    )
    logit_mean: float = training_option(0.0, description="Mean of the logit-normal distribution.")
    logit_std: float = training_option(
        1.0, gt=0, description="Standard deviation of the logit-normal distribution."
    )
    timestep_min: float = training_option(
        0.0, ge=0, le=1, description="Lower end of the range s is restricted to."
    )
    timestep_max: float = training_option(
        1.0, ge=0, le=1, description="Upper end of the range s is restricted to."
    )
    trainable: Literal["controlnet", "lora-controlnet", "lora-transformer"] = training_option(
        "controlnet",
        description="What preference tuning updates: the whole ControlNet (paper) or LoRA adapters.",
    )

    @model_validator(mode="after")
    def _range(self):
        if self.timestep_min >= self.timestep_max:
            raise ValueError("timestep_min must be below timestep_max")
        return self


class FluxControlNetBackbone(ControlNetBackbone):
    """C-FLUX: FLUX.1 + FLUX ControlNet (4 double blocks), Euler 25 steps, guidance 2.5."""

    name = "flux-controlnet"
    Options = FluxControlNetOptions
    paper_settings = {"num_candidates": 64, "selector": "ratio:ratio=0.0625"}  # N = 4 of M = 64
    base_attribute = "transformer"
    model_parts = (
        "transformer",
        "vae",
        "scheduler",
        "tokenizer",
        "text_encoder",
        "tokenizer_2",
        "text_encoder_2",
    )

    @classmethod
    def controlnet_file_problem(cls, options: Any, shapes: Mapping[str, Sequence[int]]) -> str | None:
        """A FLUX ControlNet with the double- and single-stream blocks the options build (C-FLUX:
        4 and 0)."""
        expected = (options.controlnet_layers, options.controlnet_single_layers)
        wanted = f"{expected[0]} double-stream and {expected[1]} single-stream blocks"
        if not is_flux_controlnet(shapes):
            return f"is {describe_state_dict(shapes)}; flux needs a FLUX ControlNet state dict with {wanted}"
        found = flux_block_counts(shapes)
        if found != expected:
            return (
                f"is {describe_state_dict(shapes)}; flux builds one with {wanted} (C-FLUX's): set "
                f"controlnet_layers={found[0]},controlnet_single_layers={found[1]} if this file is meant"
            )
        return None

    def __init__(self, options=None) -> None:
        super().__init__(options)
        from diffusers import (
            AutoencoderKL,
            FlowMatchEulerDiscreteScheduler,
            FluxControlNetModel,
            FluxControlNetPipeline,
            FluxTransformer2DModel,
        )

        self._setup_device()
        o = self.options
        self.transformer = load_component(FluxTransformer2DModel, o.model, "transformer")
        self.vae = load_component(AutoencoderKL, o.model, "vae")
        self.scheduler = load_component(FlowMatchEulerDiscreteScheduler, o.model, "scheduler")

        def fresh():
            config = self.transformer.config
            return FluxControlNetModel.from_transformer(
                self.transformer,
                num_layers=o.controlnet_layers,
                num_single_layers=o.controlnet_single_layers,
                attention_head_dim=config.attention_head_dim,
                num_attention_heads=config.num_attention_heads,
            )

        self.controlnet = self._load_controlnet(FluxControlNetModel, fresh)
        self._freeze(self.transformer, self.vae, self.controlnet)
        self.pipe = FluxControlNetPipeline(
            scheduler=self.scheduler,
            vae=self.vae,
            text_encoder=None,
            tokenizer=None,
            text_encoder_2=None,
            tokenizer_2=None,
            transformer=self.transformer,
            controlnet=self.controlnet,
        )
        self.pipe.set_progress_bar_config(disable=True)
        self.vae_scale = self.pipe.vae_scale_factor
        self._text = None

    # -- prompts -------------------------------------------------------------------------------
    def _encode_prompt(self, text: str) -> dict[str, Any]:
        import torch

        self._attach_text_encoders()
        with torch.no_grad():
            embeds, pooled, _ids = self.pipe.encode_prompt(
                prompt=text,
                prompt_2=text,
                device=self.device,
                max_sequence_length=self.options.max_sequence_length,
            )
        return {"prompt_embeds": embeds.to(self.dtype), "pooled_prompt_embeds": pooled.to(self.dtype)}

    def _attach_text_encoders(self) -> None:
        if self._text is None:
            from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

            model = self.options.model
            tokenizer = load_component(CLIPTokenizer, model, "tokenizer")
            self._text = {
                "tokenizer": tokenizer,
                "text_encoder": load_component(CLIPTextModel, model, "text_encoder").to(self.device).eval(),
                "tokenizer_2": load_component(T5TokenizerFast, model, "tokenizer_2"),
                "text_encoder_2": load_component(T5EncoderModel, model, "text_encoder_2")
                .to(self.device)
                .eval(),
            }
            self.pipe.tokenizer_max_length = tokenizer.model_max_length
        for key, value in self._text.items():
            setattr(self.pipe, key, value)

    def release_text_encoders(self) -> None:
        """Drop the CLIP and T5 encoders once every prompt is cached."""
        self._text = None
        for key in ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2"):
            setattr(self.pipe, key, None)

    # -- sampling ----------------------------------------------------------------------------
    def _prepare_group(self, control, prompt: str):
        import torch

        height, width = control.shape[-2:]
        # in [-1, 1], as the authors' script passes it and as training encodes it: the pipeline
        # takes a tensor as it is (a [0, 1] tensor would reach the VAE unnormalised)
        image = self.pipe.prepare_image(
            image=control * 2 - 1,
            width=width,
            height=height,
            batch_size=1,
            num_images_per_prompt=1,
            device=self.device,
            dtype=self.vae.dtype,
        )
        with torch.no_grad(), self.vae_tiling(self.is_tiled(control)):
            posterior = self.vae.encode(image).latent_dist
        return {"posterior": posterior, "height": height, "width": width, **self.cached_prompt(prompt)}

    def _denoise(self, prepared, generators: list):
        """The pipeline's Euler loop for one chunk of candidates (of one or several LR images)."""
        import numpy as np
        import torch
        from diffusers import FlowMatchEulerDiscreteScheduler
        from diffusers.pipelines.flux.pipeline_flux_controlnet import calculate_shift, retrieve_timesteps

        n, height, width = len(generators), prepared[0]["height"], prepared[0]["width"]
        channels = self.transformer.config.in_channels // 4
        config = self.vae.config
        pairs = zip(prepared, generators, strict=True)
        samples = torch.cat([p["posterior"].sample(generator=g) for p, g in pairs])
        control = (samples - config.shift_factor) * config.scaling_factor
        control = self.pipe._pack_latents(control, n, channels, control.shape[2], control.shape[3])
        latents, image_ids = self.pipe.prepare_latents(
            n, channels, height, width, prepared[0]["prompt_embeds"].dtype, self.device, generators
        )
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config)
        steps = self.options.steps
        sc = scheduler.config
        windows = self.windows(height // self.vae_scale, width // self.vae_scale)
        mu = calculate_shift(
            max(w.height * w.width for w in windows) // 4,  # the tokens the model sees at once
            sc.get("base_image_seq_len", 256),
            sc.get("max_image_seq_len", 4096),
            sc.get("base_shift", 0.5),
            sc.get("max_shift", 1.15),
        )
        timesteps, _ = retrieve_timesteps(
            scheduler, steps, self.device, sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu
        )
        embeds = batch_rows(prepared, lambda p: p["prompt_embeds"])
        pooled = batch_rows(prepared, lambda p: p["pooled_prompt_embeds"])
        text_ids = torch.zeros(embeds.shape[1], 3, device=self.device, dtype=embeds.dtype)
        for t in timesteps:
            timestep = t.expand(n).to(latents.dtype) / 1000
            if len(windows) == 1:
                velocity = self._velocity(
                    latents, timestep, control, image_ids, embeds, pooled, text_ids, self.controlnet
                )
            else:
                velocity = self._tiled_velocity(
                    windows, latents, timestep, control, (height, width), embeds, pooled, text_ids
                )
            latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
        latents = self.pipe._unpack_latents(latents, height, width, self.vae_scale)
        with self.vae_tiling(len(windows) > 1):
            decoded = self.vae.decode(
                latents / config.scaling_factor + config.shift_factor, return_dict=False
            )[0]
        return (decoded.float() / 2 + 0.5).clamp(0, 1)

    def _tiled_velocity(self, windows, latents, timestep, control, size, embeds, pooled, text_ids):
        """The velocity of packed ``latents``, the model run on each (unpacked) latent tile with
        its part of the control latents and token positions of its own, blended
        (:func:`~dp2o_core.tiling.blend_tiles`), packed again."""
        n, channels = latents.shape[0], latents.shape[-1] // 4
        spatial = self.pipe._unpack_latents(latents, *size, self.vae_scale)
        spatial_control = self.pipe._unpack_latents(control, *size, self.vae_scale)

        def pack(x):
            return self.pipe._pack_latents(x, n, channels, x.shape[-2], x.shape[-1])

        def velocity_of(window):
            ids = self.pipe._prepare_latent_image_ids(
                n, window.height // 2, window.width // 2, self.device, latents.dtype
            )
            packed = self._velocity(
                pack(window.of(spatial).contiguous()),
                timestep,
                pack(window.of(spatial_control).contiguous()),
                ids,
                embeds,
                pooled,
                text_ids,
                self.controlnet,
            )
            pixels = (window.height * self.vae_scale, window.width * self.vae_scale)
            return self.pipe._unpack_latents(packed, *pixels, self.vae_scale)

        return pack(blend_tiles(velocity_of, spatial, windows))

    def _velocity(self, latents, timestep, control, image_ids, embeds, pooled, text_ids, controlnet):
        """ControlNet + transformer on packed latents (one call of the pipeline's loop body)."""
        import torch

        n = latents.shape[0]

        def guidance(config):
            if not config.guidance_embeds:
                return None
            return torch.full((n,), self.options.guidance_scale, device=self.device, dtype=torch.float32)

        blocks, single_blocks = controlnet(
            hidden_states=latents,
            controlnet_cond=control,
            controlnet_mode=None,
            conditioning_scale=self.options.conditioning_scale,
            timestep=timestep,
            guidance=guidance(controlnet.config),
            pooled_projections=pooled,
            encoder_hidden_states=embeds,
            txt_ids=text_ids,
            img_ids=image_ids,
            return_dict=False,
        )
        return self.transformer(
            hidden_states=latents,
            timestep=timestep,
            guidance=guidance(self.transformer.config),
            pooled_projections=pooled,
            encoder_hidden_states=embeds,
            controlnet_block_samples=blocks,
            controlnet_single_block_samples=single_blocks,
            txt_ids=text_ids,
            img_ids=image_ids,
            return_dict=False,
            controlnet_blocks_repeat=False,
        )[0]

    # -- training ------------------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        """16: the VAE's 8, times the 2×2 packing of FLUX's latents."""
        return int(self.vae_scale) * 2

    def encode(self, images):
        """Images in [0, 1] → (posterior mean − shift) × scale, unpacked (N×C×h×w)."""
        config = self.vae.config
        mean = self._vae_encode(images).mean
        return (mean - config.shift_factor) * config.scaling_factor

    def encode_condition(self, lr) -> Mapping[str, Any]:
        """The packed VAE latents of the upsampled LR (posterior mean)."""
        control = self.encode(self.upsample(lr))
        channels = control.shape[1]
        packed = self.pipe._pack_latents(
            control, control.shape[0], channels, control.shape[2], control.shape[3]
        )
        return {"control": packed}

    def sample_timesteps(self, n: int, generator=None):
        """s ∈ (0, 1): logit-normal or uniform, within [timestep_min, timestep_max]."""
        import torch

        o = self.options
        if o.timestep_sampling == "logit-normal":
            u = torch.sigmoid(o.logit_mean + o.logit_std * torch.randn(n, generator=generator))
        else:
            u = torch.rand(n, generator=generator)
        return (o.timestep_min + (o.timestep_max - o.timestep_min) * u).to(self.device)

    def noisy(self, x0, noise, timesteps):
        """Flow matching: x_t = (1 − s)·x₀ + s·ε, target ε − x₀."""
        s = timesteps.to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return (1 - s) * x0 + s * noise, noise - x0

    def predict(self, x_t, timesteps, condition: Mapping[str, Any], *, reference: bool = False):
        """Velocity predicted by the policy (or reference) for unpacked latents x_t."""
        import torch

        n, channels, height, width = x_t.shape
        x_t, condition = self._model_inputs(x_t, condition)
        controlnet, adapters = self._networks(reference)
        packed = self.pipe._pack_latents(x_t, n, channels, height, width)
        image_ids = self.pipe._prepare_latent_image_ids(n, height // 2, width // 2, self.device, x_t.dtype)
        embeds = condition["prompt_embeds"]
        text_ids = torch.zeros(embeds.shape[1], 3, device=self.device, dtype=embeds.dtype)
        with adapters:
            velocity = self._velocity(
                packed,
                timesteps.to(x_t.dtype),
                condition["control"],
                image_ids,
                embeds,
                condition["pooled_prompt_embeds"],
                text_ids,
                controlnet,
            )
        return self.pipe._unpack_latents(
            velocity, height * self.vae_scale, width * self.vae_scale, self.vae_scale
        )

    def describe(self) -> Mapping[str, Any]:
        """Model source and objective, recorded with a run."""
        return {"model": self.options.model, "prediction_type": "flow"}
