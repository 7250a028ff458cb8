"""The tiny-sr network: an SR3-style pixel-space diffusion UNet that denoises the residual.

Model space. An RGB image in [0, 1] maps to x₀ = (image − ½) · ``scaling_factor``; the
bicubic-upsampled LR maps to u the same way. The factor (17.3 in the bundled folder) was chosen
as 1 / the standard deviation of the residual x₀ − u over random 64-px training crops, so that
the residual has unit variance and an ordinary DDPM schedule fits its signal-to-noise range;
``init=random`` keeps the folder's factor and schedule and draws a new UNet.

Prediction. For x_t = α_t x₀ + σ_t ε the UNet sees the noisy residual x_t − α_t u =
α_t (x₀ − u) + σ_t ε next to the upsampled LR (in [−1, 1]) and predicts the residual's
velocity v_r = α_t ε − σ_t (x₀ − u). The image-space velocity the scheduler and the DPO
objective use is v = α_t ε − σ_t x₀ = v_r − σ_t u: an exact, shift-only reparametrisation,
so errors in both spaces are equal.

A model folder (what ``save`` writes, and what ships in ``weights/``) holds ``unet/`` and
``scheduler/`` in the diffusers layout plus ``tiny_sr.json`` with the scaling factor and the
upscaling factor.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dp2o_core.atomic import write_text_atomic
from dp2o_core.errors import Dp2oError

#: The bundled, pretrained model folder.
BUNDLED_WEIGHTS = Path(__file__).with_name("weights")
SETTINGS_FILE = "tiny_sr.json"


@dataclass(frozen=True)
class TinySrSettings:
    """What a model folder records besides the UNet and scheduler configs."""

    scaling_factor: float = 20.0
    scale: int = 4


#: The UNet runs at half the HR resolution: its inputs are pixel-unshuffled by this factor
#: (2×2 pixel blocks become channels) and its outputs shuffled back, a quarter of the compute.
UNSHUFFLE = 2
#: Height and width the UNet's input must be a multiple of (unshuffle × two downsamplings).
MULTIPLE = UNSHUFFLE * 4


def unet_config() -> dict[str, Any]:
    """The UNet2DModel config of tiny-sr: 2×2-unshuffled noisy residual + upsampled LR in
    (24 channels), three levels of 32/64/64 channels, no attention (≈1.5 M parameters)."""
    return {
        "sample_size": 32,
        "in_channels": 6 * UNSHUFFLE**2,
        "out_channels": 3 * UNSHUFFLE**2,
        "block_out_channels": (32, 64, 64),
        "down_block_types": ("DownBlock2D", "DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D", "UpBlock2D"),
        "layers_per_block": 2,
        "norm_num_groups": 8,
        "time_embedding_type": "positional",
    }


def scheduler_config() -> dict[str, Any]:
    """A 1000-step linear-β DDPM schedule with v-prediction (image space, see module doc)."""
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "prediction_type": "v_prediction",
        "clip_sample": False,
        "timestep_spacing": "trailing",
    }


def new_unet():
    """A freshly initialised tiny-sr UNet (seeded by the caller's torch RNG)."""
    from diffusers import UNet2DModel

    return UNet2DModel(**unet_config())


def new_scheduler():
    """The training scheduler of a new model."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**scheduler_config())


def load_settings(folder: Path) -> TinySrSettings:
    """``tiny_sr.json`` of a model folder, with a message naming the folder when it is not one."""
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        raise Dp2oError(
            f"{folder} is not a tiny-sr model folder (no {SETTINGS_FILE}); pass the folder that "
            "`dp2o train` or `dp2o pretrain` wrote (it holds unet/, scheduler/ and tiny_sr.json)"
        )
    return TinySrSettings(**json.loads(path.read_text()))


def save_model(folder: Path, unet, scheduler, settings: TinySrSettings) -> None:
    """Write a model folder: ``unet/`` and ``scheduler/`` (diffusers) and ``tiny_sr.json``."""
    folder = Path(folder)
    unet.save_pretrained(folder / "unet")
    scheduler.save_pretrained(folder / "scheduler")
    write_text_atomic(folder / SETTINGS_FILE, json.dumps(asdict(settings), indent=2) + "\n")


def alpha_sigma(scheduler, timesteps, like):
    """α_t and σ_t of the scheduler at integer timesteps, shaped to broadcast over ``like``."""
    alphas = scheduler.alphas_cumprod.to(like.device)[timesteps.long()].float()
    shape = (-1,) + (1,) * (like.dim() - 1)
    return alphas.sqrt().view(shape).to(like.dtype), (1 - alphas).sqrt().view(shape).to(like.dtype)


def image_velocity(unet, scheduler, x_t, timesteps, upsampled, scaling_factor: float):
    """The image-space v-prediction for x_t given the upsampled LR (in [0, 1])."""
    import torch
    import torch.nn.functional as F

    u = (upsampled - 0.5) * scaling_factor
    alpha, sigma = alpha_sigma(scheduler, timesteps, x_t)
    inputs = torch.cat([x_t - alpha * u, upsampled * 2 - 1], dim=1)
    height, width = inputs.shape[-2:]
    pad_bottom, pad_right = -height % MULTIPLE, -width % MULTIPLE
    if pad_bottom or pad_right:  # any size works: edge-pad to the UNet's multiple, crop after
        inputs = F.pad(inputs, (0, pad_right, 0, pad_bottom), mode="replicate")
    output = unet(F.pixel_unshuffle(inputs, UNSHUFFLE), timesteps, return_dict=False)[0]
    residual_velocity = F.pixel_shuffle(output, UNSHUFFLE)[..., :height, :width]
    return residual_velocity - sigma * u
