"""C-SD2: Stable Diffusion 2 with an SR ControlNet fed the bicubic-upsampled LR (PAPER.md §7).

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
import copy
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from dp2o_plugins.backbones.colorfix import color_fix
from dp2o_plugins.backbones.loading import load_component, load_state_dict_file
from pydantic import Field

from dp2o_core import Backbone, PluginOptions, SampleResult
from dp2o_core.errors import Dp2oError

NEGATIVE_PROMPT = "dotted, noise, blur, lowres, smooth"


class Sd2ControlNetOptions(PluginOptions):
    """Where the weights come from and how candidates are sampled."""

    model: str = Field(
        "stabilityai/stable-diffusion-2-base",
        description="Hub id or local folder of the Stable Diffusion 2 model.",
    )
    controlnet: str | None = Field(
        None,
        description="ControlNet: diffusers folder, model.safetensors state dict, or none (copy the UNet).",
    )
    steps: int = Field(50, ge=1, description="Denoising steps (paper: DDPM, 50).")
    guidance_scale: float = Field(3.5, ge=1, description="Classifier-free guidance scale (paper: 3.5).")
    negative_prompt: str = Field(NEGATIVE_PROMPT, description="Negative prompt for guidance.")
    prompt: str = Field("", description="Prompt for every image that has no prompt of its own.")
    color_fix: Literal["adain", "wavelet", "none"] = Field(
        "adain", description="Colour correction against the upsampled LR."
    )
    chunk_size: int = Field(8, ge=1, description="Candidates denoised together in one batch (bounds memory).")
    shared_noise: bool = Field(
        False,
        description="Candidate m of every group uses seed m (a shared noise bank, as the paper's code).",
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="Precision of the networks."
    )
    device: str = Field("auto", description="Torch device ('auto' picks cuda when available).")
    trainable: Literal["controlnet", "lora-controlnet", "lora-unet"] = Field(
        "controlnet",
        description="What preference tuning updates: the whole ControlNet (paper) or LoRA adapters.",
    )
    lora_rank: int = Field(16, ge=1, description="Rank of LoRA adapters.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass.")


class Sd2ControlNetBackbone(Backbone):
    """C-SD2: Stable Diffusion 2 + SR ControlNet, DDPM 50 steps, CFG 3.5, AdaIN colour fix."""

    name = "sd2-controlnet"
    Options = Sd2ControlNetOptions

    def __init__(self, options=None) -> None:
        super().__init__(options)
        import torch
        from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel

        o = self.options
        self.device = torch.device(
            "cuda"
            if o.device == "auto" and torch.cuda.is_available()
            else ("cpu" if o.device == "auto" else o.device)
        )
        self.dtype = getattr(torch, o.dtype)
        self.unet = load_component(UNet2DConditionModel, o.model, "unet")
        self.vae = load_component(AutoencoderKL, o.model, "vae")
        self.scheduler = load_component(DDPMScheduler, o.model, "scheduler")
        self.controlnet = self._load_controlnet(ControlNetModel)
        for module in (self.unet, self.vae, self.controlnet):
            module.to(self.device, self.dtype).eval().requires_grad_(False)
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self._prompt_cache: dict[str, Any] = {}
        self._text: tuple[Any, Any] | None = None
        self._reference: Any = None

    def _load_controlnet(self, cls):
        source = self.options.controlnet
        if source is None:
            return cls.from_unet(self.unet)
        path = Path(source).expanduser()
        if path.is_file():
            controlnet = cls.from_unet(self.unet)
            state = load_state_dict_file(path)
            missing, unexpected = controlnet.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise Dp2oError(
                    f"{path} does not fit a ControlNet copied from this UNet "
                    f"({len(missing)} missing, {len(unexpected)} unexpected keys, "
                    f"e.g. {(missing or unexpected)[0]})"
                )
            return controlnet
        return load_component(cls, source, "controlnet" if (path / "controlnet").is_dir() else None)

    # -- prompts ---------------------------------------------------------------------------
    def encode_prompts(self, prompts: Sequence[str]) -> Mapping[str, Any]:
        """Prompt embeddings (N×L×D) for each text, computed once per distinct text."""
        import torch

        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if missing:
            tokenizer, encoder = self._text_encoder()
            tokens = tokenizer(
                missing,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            with torch.no_grad():
                embeds = encoder(tokens.input_ids.to(self.device))[0].to(self.dtype)
            for text, embed in zip(missing, embeds, strict=True):
                self._prompt_cache[text] = embed[None]
        return {"prompt_embeds": torch.cat([self._prompt_cache[p] for p in prompts])}

    def _text_encoder(self):
        if self._text is None:
            from transformers import CLIPTextModel, CLIPTokenizer

            tokenizer = load_component(CLIPTokenizer, self.options.model, "tokenizer")
            encoder = load_component(CLIPTextModel, self.options.model, "text_encoder").to(self.device).eval()
            self._text = (tokenizer, encoder)
        return self._text

    def release_text_encoder(self) -> None:
        """Drop the text encoder once every prompt is cached (it is not needed for training)."""
        self._text = None

    # -- sampling --------------------------------------------------------------------------
    def upsample(self, lr):
        """The control image: LR bicubic-upsampled ×scale, in [0, 1]."""
        import torch.nn.functional as F

        size = (lr.shape[-2] * self.scale, lr.shape[-1] * self.scale)
        return F.interpolate(lr.float(), size=size, mode="bicubic", align_corners=False).clamp(0, 1)

    def sample(
        self, lr, seeds: Sequence[Sequence[int]], prompts: Sequence[str] | None = None
    ) -> SampleResult:
        """M candidates per LR image, batched by ``chunk_size``, one generator per candidate."""
        import torch

        images, latents = [], []
        for index in range(lr.shape[0]):
            control = self.upsample(lr[index : index + 1]).to(self.device)
            text = prompts[index] if prompts and prompts[index] else self.options.prompt
            embeds = self.encode_prompts([self.options.negative_prompt, text])["prompt_embeds"]
            group_images = []
            for start in range(0, len(seeds[index]), self.options.chunk_size):
                chunk = list(seeds[index][start : start + self.options.chunk_size])
                group_images.append(self._denoise(control, embeds, chunk))
            group = torch.cat(group_images)
            group = color_fix(group, control, self.options.color_fix)
            images.append(group.cpu())
            with torch.no_grad():
                latents.append(self.encode(group).cpu())
        return SampleResult(
            images=torch.stack(images), seeds=[list(s) for s in seeds], latents=torch.stack(latents)
        )

    def _denoise(self, control, embeds, seeds: list[int]):
        """The pipeline's denoising loop for len(seeds) candidates of one LR image."""
        import torch
        from diffusers import DDPMScheduler
        from diffusers.utils.torch_utils import randn_tensor

        n = len(seeds)
        scheduler = DDPMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(self.options.steps, device=self.device)
        generators = [torch.Generator(self.device).manual_seed(int(seed)) for seed in seeds]
        height, width = control.shape[-2] // self.vae_scale, control.shape[-1] // self.vae_scale
        shape = (n, self.unet.config.in_channels, height, width)
        latents = randn_tensor(shape, generator=generators, device=self.device, dtype=self.dtype)
        latents = latents * scheduler.init_noise_sigma
        negative, positive = embeds[:1], embeds[1:]
        prompt_embeds = torch.cat([negative.expand(n, -1, -1), positive.expand(n, -1, -1)])
        guidance = self.options.guidance_scale
        with torch.no_grad(), _cached_condition(self.controlnet, control.to(self.dtype), 2 * n):
            for t in scheduler.timesteps:
                model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
                down, mid = self.controlnet(
                    model_input,
                    t,
                    encoder_hidden_states=prompt_embeds,
                    controlnet_cond=control,
                    conditioning_scale=1.0,
                    return_dict=False,
                )
                noise = self.unet(
                    model_input,
                    t,
                    encoder_hidden_states=prompt_embeds,
                    down_block_additional_residuals=down,
                    mid_block_additional_residual=mid,
                    return_dict=False,
                )[0]
                uncond, cond = noise.chunk(2)
                noise = uncond + guidance * (cond - uncond)
                latents = scheduler.step(noise, t, latents, generator=generators, return_dict=False)[0]
            decoded = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
        return (decoded.float() / 2 + 0.5).clamp(0, 1)

    # -- training ----------------------------------------------------------------------------
    def encode(self, images):
        """Images in [0, 1] → VAE latents (posterior mean × scaling factor)."""
        posterior = self.vae.encode(images.to(self.device, self.dtype) * 2 - 1).latent_dist
        return posterior.mean * self.vae.config.scaling_factor

    def encode_condition(self, lr) -> Mapping[str, Any]:
        """The control image (upsampled LR); prompt embeddings are added by the caller."""
        return {"control": self.upsample(lr).to(self.device, self.dtype)}

    def sample_timesteps(self, n: int, generator=None):
        """Uniform over the DDPM training steps."""
        import torch

        return torch.randint(0, self.scheduler.config.num_train_timesteps, (n,), generator=generator).to(
            self.device
        )

    def noisy(self, x0, noise, timesteps):
        """x_t and the target the model predicts (its scheduler's prediction_type)."""
        x_t = self.scheduler.add_noise(x0, noise, timesteps)
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            return x_t, noise
        if kind == "v_prediction":
            return x_t, self.scheduler.get_velocity(x0, noise, timesteps)
        if kind == "sample":
            return x_t, x0
        raise Dp2oError(
            f"unsupported prediction_type {kind!r} in the scheduler config of {self.options.model}"
        )

    def prepare_training(self) -> None:
        """Make the trainable part trainable and set up the frozen reference (once)."""
        import torch

        o = self.options
        if o.trainable == "controlnet":
            self._reference = copy.deepcopy(self.controlnet).requires_grad_(False).eval()
            self.controlnet.requires_grad_(True).train()
        else:
            from peft import LoraConfig

            target = self.controlnet if o.trainable == "lora-controlnet" else self.unet
            config = LoraConfig(
                r=o.lora_rank,
                lora_alpha=o.lora_rank,
                init_lora_weights="gaussian",
                target_modules=["to_k", "to_q", "to_v", "to_out.0"],
            )
            target.add_adapter(config)
            for name, parameter in target.named_parameters():
                parameter.requires_grad_("lora_" in name)
            target.train()
        if o.gradient_checkpointing:
            for module in (self.controlnet, self.unet):
                module.enable_gradient_checkpointing()
        _ = torch  # parameters move with their module

    def trainable_parameters(self) -> Iterable[Any]:
        """The parameters preference tuning updates."""
        modules = [self.controlnet, self.unet]
        return [p for m in modules for p in m.parameters() if p.requires_grad]

    def predict(self, x_t, timesteps, condition: Mapping[str, Any], *, reference: bool = False):
        """ControlNet + UNet prediction of the policy, or of the frozen reference."""
        controlnet = self.controlnet
        adapters = contextlib.nullcontext()
        if reference:
            if self.options.trainable == "controlnet":
                controlnet = self._reference if self._reference is not None else self.controlnet
            else:
                adapters = _adapters_off(
                    self.controlnet if self.options.trainable == "lora-controlnet" else self.unet
                )
        embeds, control = condition["prompt_embeds"], condition["control"]
        with adapters:
            down, mid = controlnet(
                x_t,
                timesteps,
                encoder_hidden_states=embeds,
                controlnet_cond=control,
                conditioning_scale=1.0,
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

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """``controlnet/`` (diffusers folder) and ``model.safetensors`` (the official layout)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        if self.options.trainable == "controlnet":
            self.controlnet.save_pretrained(directory / "controlnet")
            state = {k: v.detach().contiguous().cpu() for k, v in self.controlnet.state_dict().items()}
            save_file(state, str(directory / "model.safetensors"))
        else:
            from peft.utils import get_peft_model_state_dict

            target = self.controlnet if self.options.trainable == "lora-controlnet" else self.unet
            state = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(target).items()}
            directory.mkdir(parents=True, exist_ok=True)
            save_file(state, str(directory / "lora.safetensors"))

    def describe(self) -> Mapping[str, Any]:
        """Model source and prediction type, recorded with a run."""
        return {"model": self.options.model, "prediction_type": self.scheduler.config.prediction_type}


@contextlib.contextmanager
def _cached_condition(controlnet, control, batch: int):
    """Compute the ControlNet's embedding of the control image once; every step reuses it."""
    import torch

    module = controlnet.controlnet_cond_embedding
    with torch.no_grad():
        embedding = module(control)
    original = module.forward
    module.forward = lambda _cond: embedding.expand(batch, -1, -1, -1)
    try:
        yield
    finally:
        module.forward = original


@contextlib.contextmanager
def _adapters_off(model):
    model.disable_adapters()
    try:
        yield
    finally:
        model.enable_adapters()
