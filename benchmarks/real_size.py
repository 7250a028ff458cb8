"""One DPO optimizer step at the paper's model sizes: dp2o's trainer vs the naive way.

The models are the published architectures with random weights, written in this file (no
download) and loaded through the backbones' own ``from_pretrained`` paths:

* SD2: the Stable Diffusion 2 base UNet (865 M parameters), a ControlNet copied from its
  encoder (364 M), the SD VAE (84 M) and the OpenCLIP ViT-H/14 text tower (340 M);
* FLUX: FLUX.1's real widths — 24 heads × 128 (3072 wide), T5-XXL's 4096-wide encoder,
  CLIP-L, the 16-channel VAE — at reduced depth: ``--flux-depth D,S[,C]`` double and single
  blocks in the transformer (default 2,4 of FLUX.1's 19,38) and C double blocks in the
  ControlNet (default 4, what dp2o makes new), T5 with ``--t5-layers`` (2) of its 24 layers;
* sd-upscaler: Stable Diffusion's ×4 upscaler (``stable-diffusion-x4-upscaler``: a 7-channel
  UNet of 473 M parameters with the noise level as class label, self-attention only at the
  lowest resolution; its 3-level VAE, 55 M; the OpenCLIP ViT-H/14 text tower) — the whole UNet is
  trained, so its reference is a copy of the UNet;
* ldm-sr: latent-diffusion SR (``ldm-super-resolution-4x-openimages``: a 6-channel UNet2DModel
  of 114 M parameters and a 3-level VQ autoencoder of 55 M with 8192 codes; no text).

For one optimizer step of one pair (winner + loser) at ``--size`` px (512: 64×64 latents for
SD2 and FLUX; the ×4 models' latents are a quarter of the output, 128×128), gradient
checkpointing on in both ways:

* dp2o — ``Trainer`` on a run directory: cached candidate latents and prompt embeddings (no
  VAE, no text encoder in the step), winner and loser in one pass, frozen networks and the
  reference network in bfloat16 (``dtype=bfloat16``; what is trained stays float32; ldm-sr has
  no dtype option and runs in float32), 8-bit AdamW where bitsandbytes runs on the device
  (``optimizer=auto``);
* naive — float32 throughout, the VAE and text encoder(s) run every step, a deep copy of the
  whole pipeline as the reference, winner and loser in separate passes, torch AdamW.

Each way runs in a fresh process (so neither inherits the other's freed memory), ``--rounds``
times, alternating (dp2o, naive, naive, dp2o, …). Printed per backbone: peak memory (GPU: peak
allocated; CPU: peak resident set above the process's size before any model was loaded), the
model state (weights, gradients, optimizer moments) and steps per second, with the ratios
dp2o / naive (median over rounds, min–max). With ``--json`` the last line is one JSON object
``{"sd2": {"peak_memory_ratio", "model_state_ratio", "steps_per_s_ratio", "peak_gib", …},
"flux": {…}, …}``.

    python benchmarks/real_size.py [--only sd2|flux|sd-upscaler|ldm-sr] [--size 512] [--rounds 1]
        [--steps 1] [--json]

On a CPU a real-size step takes minutes and the naive SD2 way needs about 20 GiB of memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from preference_run import make_preference_run  # noqa: E402
from tiny_models import flux_scheduler, sd_scheduler, tiny_clip_tokenizer  # noqa: E402
from train_step import alternating, measure, summary  # noqa: E402

from dp2o_core.registry import PluginManager  # noqa: E402
from dp2o_core.specs import resolve_spec  # noqa: E402

GIB = 2**30

#: Stable Diffusion 2 base (512 px): UNet, VAE and the OpenCLIP ViT-H/14 text tower.
SD2_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 1024,
    "attention_head_dim": (5, 10, 20, 20),
    "use_linear_projection": True,
}
SD_VAE = {
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "scaling_factor": 0.18215,
}
OPENCLIP_H_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "projection_dim": 512,
    "hidden_act": "gelu",
}
#: FLUX.1 [dev]: transformer widths, 16-channel VAE, CLIP-L and T5-XXL text encoders.
FLUX_TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 64,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
FLUX_VAE = {  # SD's VAE with 16 latent channels, its own scaling, no quant convs
    **SD_VAE,
    "latent_channels": 16,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
CLIP_L_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}
T5_XXL = {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_heads": 64}
T5_LAYERS = 2
#: Stable Diffusion x4 upscaler (its original config: model_channels 256, channel_mult 1,2,2,4,
#: attention at downsampling 2,4,8 with self-attention disabled but at the last, 8 heads, the
#: noise level as one of 1000 classes), its 3-level VAE (×4, scale factor 0.08333).
SD_UPSCALER_UNET = {
    "sample_size": 128,
    "in_channels": 7,
    "out_channels": 4,
    "block_out_channels": (256, 512, 512, 1024),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3,
    "up_block_types": ("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",),
    "only_cross_attention": (True, True, True, False),
    "cross_attention_dim": 1024,
    "attention_head_dim": 8,
    "use_linear_projection": True,
    "num_class_embeds": 1000,
}
X4_VAE = {
    **SD_VAE,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (128, 256, 512),
    "scaling_factor": 0.08333,
}
#: Latent-diffusion SR as its diffusers folder configures it (widths 160, 320, 320, 640;
#: attention at the lowest resolution, 32 channels per head), its VQ-f4 autoencoder (8192
#: codes of 3 channels).
LDM_SR_UNET = {
    "sample_size": 64,
    "in_channels": 6,
    "out_channels": 3,
    "block_out_channels": (160, 320, 320, 640),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D",) * 3 + ("AttnDownBlock2D",),
    "up_block_types": ("AttnUpBlock2D",) + ("UpBlock2D",) * 3,
    "attention_head_dim": 32,
}
LDM_VQ = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (128, 256, 512),
    "layers_per_block": 2,
    "latent_channels": 3,
    "num_vq_embeddings": 8192,
    "vq_embed_dim": 3,
}

#: ``--tiny``: the same structure at a small width, so that a test can run every code path.
TINY = {
    "unet": {
        "block_out_channels": (32, 64, 64, 64),
        "cross_attention_dim": 64,
        "attention_head_dim": 8,
        "norm_num_groups": 16,
    },
    "unet2d": {"block_out_channels": (32, 64, 64, 64), "attention_head_dim": 8, "norm_num_groups": 16},
    "vae": {"block_out_channels": (16, 16, 32, 32), "layers_per_block": 1, "norm_num_groups": 8},
    "vae3": {"block_out_channels": (16, 16, 32), "layers_per_block": 1, "norm_num_groups": 8},
    "text": {
        "vocab_size": 64,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "projection_dim": 32,
    },
    "transformer": {
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": 32,
        "pooled_projection_dim": 64,
        "axes_dims_rope": (4, 4, 8),
    },
    "t5": {"vocab_size": 64, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_heads": 4},
}


def _clip_text(config: dict, tiny: bool):
    from transformers import CLIPTextConfig, CLIPTextModel

    merged = {**config, **(TINY["text"] if tiny else {})}
    return CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, **merged))


def _tokenizer():
    tokenizer = tiny_clip_tokenizer()  # a few words; ids are valid for any vocabulary size
    tokenizer.model_max_length = 77  # the real prompt length: cross-attention sees 77 tokens
    return tokenizer


def write_sd2(folder: Path, tiny: bool = False) -> Path:
    """SD2-base UNet, VAE, text encoder, tokenizer and scheduler in the hub layout."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    UNet2DConditionModel(**{**SD2_UNET, **(TINY["unet"] if tiny else {})}).save_pretrained(folder / "unet")
    AutoencoderKL(**{**SD_VAE, **(TINY["vae"] if tiny else {})}).save_pretrained(folder / "vae")
    _clip_text(OPENCLIP_H_TEXT, tiny).save_pretrained(folder / "text_encoder")
    _tokenizer().save_pretrained(folder / "tokenizer")
    sd_scheduler().save_pretrained(folder / "scheduler")
    return folder


def write_flux(
    folder: Path,
    double: int,
    single: int,
    controlnet_blocks: int = 4,
    *,
    tiny: bool = False,
    t5_layers: int = T5_LAYERS,
) -> Path:
    """FLUX.1-wide transformer at ``double``/``single`` depth, a ControlNet of ``controlnet_blocks``
    double blocks (4: what dp2o makes new), VAE, CLIP-L, T5 of ``t5_layers`` layers, tokenizers."""
    from diffusers import AutoencoderKL, FluxControlNetModel, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    torch.manual_seed(0)
    transformer = {**FLUX_TRANSFORMER, **(TINY["transformer"] if tiny else {})}
    base = FluxTransformer2DModel(num_layers=double, num_single_layers=single, **transformer)
    base.save_pretrained(folder / "transformer")
    FluxControlNetModel.from_transformer(
        base,
        num_layers=controlnet_blocks,
        num_single_layers=0,
        attention_head_dim=transformer["attention_head_dim"],
        num_attention_heads=transformer["num_attention_heads"],
    ).save_pretrained(folder / "controlnet")
    del base
    AutoencoderKL(**{**FLUX_VAE, **(TINY["vae"] if tiny else {})}).save_pretrained(folder / "vae")
    _clip_text(CLIP_L_TEXT, tiny).save_pretrained(folder / "text_encoder")  # its width: pooled_projection_dim
    _tokenizer().save_pretrained(folder / "tokenizer")
    t5 = {**T5_XXL, **(TINY["t5"] if tiny else {})}  # d_model: joint_attention_dim
    T5EncoderModel(T5Config(num_layers=t5_layers, **t5)).save_pretrained(folder / "text_encoder_2")
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"▁{w}", -1.0) for w in ("a", "photo")]
    T5Tokenizer(vocab=pieces).save_pretrained(folder / "tokenizer_2")
    flux_scheduler().save_pretrained(folder / "scheduler")
    return folder


def write_sd_upscaler(folder: Path, tiny: bool = False) -> Path:
    """The ×4 upscaler's UNet, VAE, text encoder, tokenizer and both schedulers, saved by
    ``StableDiffusionUpscalePipeline`` (its layout and model_index.json)."""
    from diffusers import AutoencoderKL, StableDiffusionUpscalePipeline, UNet2DConditionModel
    from tiny_models import upscaler_schedulers

    torch.manual_seed(0)
    scheduler, low_res_scheduler = upscaler_schedulers()
    StableDiffusionUpscalePipeline(
        unet=UNet2DConditionModel(**{**SD_UPSCALER_UNET, **(TINY["unet"] if tiny else {})}),
        vae=AutoencoderKL(**{**X4_VAE, **(TINY["vae3"] if tiny else {})}),
        text_encoder=_clip_text(OPENCLIP_H_TEXT, tiny),
        tokenizer=_tokenizer(),
        scheduler=scheduler,
        low_res_scheduler=low_res_scheduler,
    ).save_pretrained(folder)
    return folder


def write_ldm_sr(folder: Path, tiny: bool = False) -> Path:
    """Latent-diffusion SR's UNet, VQ autoencoder and DDIM scheduler (its 0.0015–0.0155
    schedule), saved by ``LDMSuperResolutionPipeline``."""
    from diffusers import DDIMScheduler, LDMSuperResolutionPipeline, UNet2DModel, VQModel

    torch.manual_seed(0)
    LDMSuperResolutionPipeline(
        unet=UNet2DModel(**{**LDM_SR_UNET, **(TINY["unet2d"] if tiny else {})}),
        vqvae=VQModel(**{**LDM_VQ, **(TINY["vae3"] if tiny else {})}),
        scheduler=DDIMScheduler(
            beta_start=0.0015, beta_end=0.0155, beta_schedule="scaled_linear", clip_sample=False
        ),
    ).save_pretrained(folder)
    return folder


#: backbone → what writes its model folder (FLUX: :func:`write_flux`, which takes its depth).
WRITERS = {"sd2": write_sd2, "sd-upscaler": write_sd_upscaler, "ldm-sr": write_ldm_sr}
#: backbone → the networks counted in the printed header.
NETWORKS = {
    "sd2": ("unet", "controlnet", "vae"),
    "flux": ("transformer", "controlnet", "vae"),
    "sd-upscaler": ("unet", "vae"),
    "ldm-sr": ("unet", "vqvae"),
}


def flux_depth(text: str) -> tuple[int, int, int]:
    """``D,S`` or ``D,S,C``: transformer double and single blocks, ControlNet double blocks (4)."""
    values = [int(v) for v in text.split(",")]
    return (values[0], values[1], values[2] if len(values) > 2 else 4)


def backbone_spec(kind: str, model: Path, device: str, dtype: str, **options: object) -> str:
    """The backbone spec of a model written here (FLUX: its ControlNet folder, 512 text tokens;
    ldm-sr: no dtype option, float32)."""
    spec = f"{kind}:model={model},device={device}" + ("" if kind == "ldm-sr" else f",dtype={dtype}")
    if kind == "flux":
        spec += f",max_sequence_length=512,controlnet={model / 'controlnet'}"
    if kind in ("sd2", "flux"):  # --tiny runs small images: sampled at 4× their size, not enlarged
        spec += ",geometry=exact"
    return spec + "".join(f",{key}={value}" for key, value in options.items())


def specs(kind: str, model: Path, device: str, dtype: str = "bfloat16") -> tuple[str, str]:
    """(dp2o's backbone spec, the naive way's): same model, dp2o with its memory levers (its
    frozen networks in ``dtype``)."""
    return (
        backbone_spec(kind, model, device, dtype, gradient_checkpointing="true"),
        backbone_spec(kind, model, device, "float32", gradient_checkpointing="true"),
    )


def parameter_counts(kind: str, spec: str) -> dict[str, float]:
    """Millions of parameters of each network the backbone loads (for the printed header)."""
    backbone = resolve_spec(PluginManager(), "backbone", spec).build()
    counts = {
        name: sum(p.numel() for p in getattr(backbone, name).parameters()) / 1e6 for name in NETWORKS[kind]
    }
    del backbone
    return counts


def benchmark(kind: str, folder: Path, args) -> dict:
    """Write the models (unless ``folder/model`` holds them) and a run, then measure both ways
    ``args.rounds`` times, alternating."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = folder / "model"
    if model.exists():
        pass
    elif kind == "flux":
        write_flux(model, *flux_depth(args.flux_depth), tiny=args.tiny, t5_layers=args.t5_layers)
    else:
        WRITERS[kind](model, args.tiny)
    ours, naive = specs(kind, model, device, args.dtype)
    counts = parameter_counts(kind, naive)
    maker = resolve_spec(PluginManager(), "backbone", naive).build()
    run = make_preference_run(folder, maker, held_out=0, size=args.size)
    del maker
    sizes = (args.steps, 1, 1)  # one pair per optimizer step, winner and loser
    knobs = {
        "dp2o": {"warmup": args.warmup, "optimizer": "auto"},
        "naive": {"warmup": args.warmup, "checkpointing": True},
    }
    figures = summary(
        alternating(
            args.rounds, lambda way: measure(way, ours if way == "dp2o" else naive, run, sizes, knobs[way])
        )
    )
    header = (
        f"{kind}: {', '.join(f'{k} {v:.0f} M' for k, v in counts.items())} parameters; "
        f"{args.size} px, {device}, {args.rounds} round(s)"
    )
    return printed_figures(
        header, figures, parameters_millions=counts, size=args.size, device=device, rounds=args.rounds
    )


def printed_figures(header: str, figures: dict, **facts: object) -> dict:
    """Print ``header`` and the memory and speed figures of :func:`train_step.summary`, both ways
    and their ratios; return them as the JSON record (with ``facts`` added)."""
    speed, peak, state = figures["steps_per_s"], figures["peak_bytes"], figures["state_bytes"]
    print(
        f"{header}\n"
        f"  peak memory   dp2o {peak[0] / GIB:7.2f} GiB  naive {peak[1] / GIB:7.2f} GiB  ratio {peak[2]}\n"
        f"  model state   dp2o {state[0] / GIB:7.2f} GiB  naive {state[1] / GIB:7.2f} GiB  ratio {state[2]}\n"
        f"  steps/s       dp2o {speed[0]:7.4f}      naive {speed[1]:7.4f}      ratio {speed[2]}",
        flush=True,
    )
    return {
        "peak_memory_ratio": peak[2].median,
        "model_state_ratio": state[2].median,
        "steps_per_s_ratio": speed[2].median,
        "peak_gib": peak[0] / GIB,
        "naive_peak_gib": peak[1] / GIB,
        "model_state_gib": state[0] / GIB,
        "naive_model_state_gib": state[1] / GIB,
        "steps_per_s": speed[0],
        "naive_steps_per_s": speed[1],
        "spread": {
            "peak_memory": peak[2].as_dict(),
            "model_state": state[2].as_dict(),
            "steps_per_s": speed[2].as_dict(),
        },
        **facts,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=tuple(NETWORKS), help="Benchmark one backbone.")
    parser.add_argument("--size", type=int, default=512, help="HR size in pixels (512: 64×64 latents).")
    parser.add_argument("--rounds", type=int, default=1, help="Fresh-process runs of each way, alternating.")
    parser.add_argument("--steps", type=int, default=1, help="Timed optimizer steps per run.")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed optimizer steps before them.")
    parser.add_argument(
        "--flux-depth",
        default="2,4",
        help="FLUX transformer double,single blocks[,ControlNet double blocks (default 4)].",
    )
    parser.add_argument("--t5-layers", type=int, default=T5_LAYERS, help="T5-XXL layers kept (of 24).")
    parser.add_argument(
        "--dtype",
        default="bfloat16",
        choices=("bfloat16", "float32"),
        help="dp2o's frozen networks: bfloat16 (default), or float32 on a CPU without fast bfloat16 "
        "convolutions (torch's CPU falls back to a slow reference path for large bfloat16 convolutions).",
    )
    parser.add_argument("--tiny", action="store_true", help="Small widths (a test of the code paths).")
    parser.add_argument("--json", action="store_true", help="End with one JSON line of the results.")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    results = {}
    for kind in [args.only] if args.only else list(NETWORKS):
        with tempfile.TemporaryDirectory(prefix=f"dp2o-real-{kind}-") as folder:
            results[kind] = benchmark(kind, Path(folder), args)
    if args.json:
        print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
