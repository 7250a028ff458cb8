"""``tiny-sr``: the small ×4 diffusion SR generator that ships with dp2o (the embedded default).

Pixel space, so there is no VAE: ``encode`` is an affine map of the image and the sample
stage stores each candidate's x₀ as its latent. Sampling is DDIM with η (default 1, i.e.
ancestral noise at every step) so that candidates of one input differ visibly with the seed
— preference pairs need that. The whole UNet is trained; the reference is a frozen copy.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from dp2o_plugins.backbones.loading import load_component, resolve_device
from dp2o_plugins.backbones.tiny_sr.network import (
    BUNDLED_WEIGHTS,
    alpha_sigma,
    image_velocity,
    load_settings,
    save_model,
)
from dp2o_plugins.backbones.whole_unet import WholeUnetTraining, sample_in_chunks
from pydantic import Field

from dp2o_core import Backbone, SampleResult, TiledSamplingOptions, runtime_option, training_option
from dp2o_core.imageio import upsample_bicubic
from dp2o_core.tiling import blend_tiles, plan_model_windows


class TinySrOptions(TiledSamplingOptions):
    """Which weights, how candidates are sampled, and the tiles of large images (``tile``,
    ``overlap``; default 512 and 64 output pixels)."""

    weights: Path | None = Field(
        None, description="Model folder (unet/, scheduler/, tiny_sr.json); none: the bundled pretrained one."
    )
    init: Literal["weights", "random"] = Field(
        "weights",
        description="'random': a freshly initialised UNet (seeded by init_seed) with the folder's schedule "
        "and scaling, the starting point of `dp2o pretrain`; 'weights': the folder's trained UNet.",
    )
    init_seed: int = Field(0, ge=0, description="Seed of the random initialisation (init=random).")
    steps: int = Field(10, ge=1, le=1000, description="DDIM denoising steps.")
    eta: float = Field(
        1.0, ge=0, le=1, description="DDIM η: 0 deterministic, 1 fresh noise every step (seed diversity)."
    )
    train_timesteps: int = training_option(
        1000,
        ge=1,
        le=1000,
        description="Training draws timesteps uniformly below this (1000: the whole schedule).",
    )
    chunk_size: int = runtime_option(
        16, ge=1, description="Candidates denoised together in one batch (bounds memory)."
    )
    device: str = runtime_option("auto", description="Torch device ('auto' picks cuda when available).")
    gradient_checkpointing: bool = runtime_option(
        False, description="Recompute activations in the backward pass."
    )


class TinySrBackbone(WholeUnetTraining, Backbone):
    """A 1.6 M-parameter SR3-style pixel-space UNet (v-prediction on the residual), ×4."""

    name = "tiny-sr"
    Options = TinySrOptions
    #: measured on a CPU: 630–880 bytes per output pixel and candidate at 64–256 px LR inputs
    sampling_bytes_per_pixel = 1024

    @classmethod
    def readiness(cls, options: Any) -> list:
        """The model folder (the bundled one unless ``weights`` names another)."""
        from dp2o_plugins.backbones.loading import file_check

        folder = Path(options.weights).expanduser() if options.weights is not None else BUNDLED_WEIGHTS
        return file_check(f"backbone {cls.name}", "weights", str(folder))

    def __init__(self, options=None) -> None:
        super().__init__(options)
        from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

        o = self.options
        self.device = resolve_device(o.device)
        self.folder = Path(o.weights).expanduser() if o.weights is not None else BUNDLED_WEIGHTS
        self.settings = load_settings(self.folder)
        self.scale = self.settings.scale
        if o.init == "random":
            import torch
            from dp2o_plugins.backbones.tiny_sr.network import new_unet

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(o.init_seed)
                self.unet = new_unet().to(self.device).eval()
        else:
            self.unet = load_component(UNet2DModel, str(self.folder), "unet").to(self.device).eval()
        self.unet.requires_grad_(False)
        self.scheduler = load_component(DDPMScheduler, str(self.folder), "scheduler")
        self.sampler = DDIMScheduler.from_config(self.scheduler.config)
        self._reference: Any = None

    # -- sampling ------------------------------------------------------------------------------
    def upsample(self, lr):
        """LR bicubic-upsampled ×scale, in [0, 1]: the condition and the colour anchor."""
        return upsample_bicubic(lr, self.scale)

    def sample(
        self, lr, seeds: Sequence[Sequence[int]], prompts: Sequence[str] | None = None
    ) -> SampleResult:
        """M candidates per LR image, ``chunk_size`` at a time, one generator per candidate."""
        stacked = sample_in_chunks(
            seeds,
            self.options.chunk_size,
            self.device,
            lambda b: self.upsample(lr[b : b + 1]).to(self.device),
            lambda upsampled, generators: self._denoise(
                upsampled.expand(len(generators), -1, -1, -1), generators
            ),
        )
        latents = self.encode(stacked.flatten(0, 1)).cpu().view_as(stacked)
        return SampleResult(images=stacked, seeds=[list(s) for s in seeds], latents=latents)

    def _denoise(self, upsampled, generators):
        """DDIM from x_T = α_T u + σ_T ε to an image in [0, 1] for a chunk of candidates."""
        from diffusers.utils.torch_utils import randn_tensor

        sampler = copy.deepcopy(self.sampler)
        sampler.set_timesteps(self.options.steps, device=self.device)
        first = sampler.timesteps[:1].expand(upsampled.shape[0])
        u = self.encode(upsampled)
        noise = randn_tensor(u.shape, generator=generators, device=self.device, dtype=u.dtype)
        alpha, sigma = alpha_sigma(self.scheduler, first, u)
        x = alpha * u + sigma * noise
        windows = self.windows(*x.shape[-2:])
        for t in sampler.timesteps:
            timesteps = t.expand(x.shape[0]).to(self.device)

            def velocity(window, x=x, timesteps=timesteps):
                return image_velocity(
                    self.unet,
                    self.scheduler,
                    window.of(x),
                    timesteps,
                    window.of(upsampled),
                    self.settings.scaling_factor,
                )

            v = blend_tiles(velocity, x, windows)
            x = sampler.step(v, t, x, eta=self.options.eta, generator=generators, return_dict=False)[0]
        return self.decode(x)

    def windows(self, height: int, width: int) -> list:
        """The tiles an output of ``height`` × ``width`` pixels is denoised in (one: all of it,
        when it fits the ``tile`` option). The UNet halves its input twice: tiles start and end
        on a grid of 4 pixels."""
        return plan_model_windows(height, width, self.options.tile, self.options.overlap, grid=4)

    def decode(self, x0):
        """Model space → images in [0, 1]."""
        return (x0.float() / self.settings.scaling_factor + 0.5).clamp(0, 1)

    # -- training ---------------------------------------------------------------------------
    def encode(self, images):
        """Images in [0, 1] → x₀ = (image − ½) · scaling_factor (pixel space, no VAE)."""
        return (images.to(self.device).float() - 0.5) * self.settings.scaling_factor

    def encode_condition(self, lr) -> Mapping[str, Any]:
        """The upsampled LR image."""
        return {"upsampled": self.upsample(lr).to(self.device)}

    def sample_timesteps(self, n: int, generator=None):
        """Uniform over the first ``train_timesteps`` DDPM steps."""
        import torch

        top = min(self.options.train_timesteps, self.scheduler.config.num_train_timesteps)
        return torch.randint(0, top, (n,), generator=generator).to(self.device)

    def noisy(self, x0, noise, timesteps):
        """x_t and the image-space velocity target."""
        alpha, sigma = alpha_sigma(self.scheduler, timesteps, x0)
        return alpha * x0 + sigma * noise, alpha * noise - sigma * x0

    def predict(self, x_t, timesteps, condition: Mapping[str, Any], *, reference: bool = False):
        """The policy's (or frozen reference's) image-space velocity."""
        unet = self.policy_or_reference(reference)
        return image_velocity(
            unet, self.scheduler, x_t, timesteps, condition["upsampled"], self.settings.scaling_factor
        )

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """A complete model folder (diffusers ``unet/`` + ``scheduler/`` + ``tiny_sr.json``)."""
        save_model(Path(directory), self.unet, self.scheduler, self.settings)

    def tuned_options(self, directory: Path) -> dict[str, str]:
        """``weights=DIR`` (and ``init=weights``): the saved folder is a whole model."""
        return {"weights": str(directory), "init": "weights"}

    def describe(self) -> Mapping[str, Any]:
        """Weights folder, prediction type, parameter count."""
        return {
            "weights": "bundled" if self.folder == BUNDLED_WEIGHTS else str(self.folder),
            "prediction_type": self.scheduler.config.prediction_type,
            "parameters": sum(p.numel() for p in self.unet.parameters()),
        }
