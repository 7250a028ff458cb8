"""Sampling candidates: dp2o's batched sampler vs the stock diffusers pipeline once per seed.

For each backbone (SD2-style, FLUX-style, the ×4 upscaler and latent-diffusion SR:
tiny-but-not-trivial random configs built in code, on the CPU) it samples M = 16 candidates
for each of 4 LR inputs both ways, checks that the images agree, and prints images per second
and the ratio: the two ways run interleaved (``--rounds`` rounds, each running both in an order
that alternates), and the
ratio is the median over rounds of the per-round ratio with its spread (min–max). With M below
``--chunk``, it also times the groups' candidates packed into shared batches (one call for all
inputs) against one call per group. Then it compares the
weights held in memory for training: dp2o's policy + reference (a frozen copy of the
ControlNet, or of the UNet for the whole-UNet backbones; no text encoder) against a deep copy
of the whole pipeline as the reference.

    python benchmarks/sample_backbones.py [--steps 8] [--candidates 16] [--inputs 4] [--lr-size 32]
        [--rounds 3] [--only sd2|flux|sd-upscaler|ldm-sr]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from interleave import Ratio, interleaved  # noqa: E402
from tiny_models import (  # noqa: E402
    save_tiny_flux,
    save_tiny_ldm_sr,
    save_tiny_sd,
    save_tiny_upscaler,
    stock_pipeline,
    stock_sample,
)

from dp2o_core.registry import PluginManager  # noqa: E402
from dp2o_core.specs import resolve_spec  # noqa: E402


def weight_bytes(*modules) -> int:
    """Bytes of distinct parameter and buffer storage held by ``modules``."""
    seen, total = set(), 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            key = tensor.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += tensor.untyped_storage().nbytes()
    return total


def run_stock(pipe, model, lr, seeds, steps: int):
    """The stock pipeline called once per seed, as the backbone's defaults drive it."""
    images = [
        stock_sample(pipe, model, lr[index : index + 1], seed, steps)
        for index in range(lr.shape[0])
        for seed in seeds[index]
    ]
    return torch.stack(images)


def whole_pipeline(kind: str, model):
    """The stock pipeline over the backbone's own modules (the ×4 models: loaded from its folder)."""
    if kind == "sd-upscaler":
        from diffusers import StableDiffusionUpscalePipeline

        pipe = StableDiffusionUpscalePipeline.from_pretrained(model.options.model)
    elif kind == "ldm-sr":
        from diffusers import LDMSuperResolutionPipeline

        pipe = LDMSuperResolutionPipeline.from_pretrained(model.options.model)
    else:
        return stock_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def training_weight_bytes(model, pipe) -> tuple[int, int]:
    """(dp2o's training weights: the networks it keeps and its reference copy, no text encoder;
    the naive way's: every network of the pipeline — the policy — plus a deep copy of all of it)."""
    model.prepare_training()
    kept = [model.unet if hasattr(model, "unet") else model.base]
    kept += [getattr(model, name) for name in ("controlnet", "vae", "vqvae") if hasattr(model, name)]
    dp2o = weight_bytes(*kept, model._reference)  # each storage counted once
    networks = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    copied = copy.deepcopy(networks)
    return dp2o, weight_bytes(*networks, *copied)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--inputs", type=int, default=4)
    parser.add_argument("--lr-size", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of both ways")
    parser.add_argument("--only", choices=("sd2", "flux", "sd-upscaler", "ldm-sr"), help="One backbone.")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    manager = PluginManager(entry_points=False)
    lr = torch.rand(args.inputs, 3, args.lr_size, args.lr_size, generator=torch.Generator().manual_seed(0))
    seeds = [[1000 * i + m for m in range(args.candidates)] for i in range(args.inputs)]
    total = args.inputs * args.candidates
    print(
        f"{args.inputs} LR inputs × M = {args.candidates} at {args.lr_size}→{4 * args.lr_size} px, "
        f"{args.steps} steps, CPU threads {torch.get_num_threads()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        # Random models with the proportions of the real ones: the SD ControlNet copies the UNet's
        # encoder (~40 % of it) and the text encoder is ~40 % of the UNet (SD2: 865 M UNet, 361 M
        # ControlNet, 340 M text encoder, 84 M VAE); the FLUX ControlNet has 4 double blocks of a
        # deeper transformer.
        builders = (
            (
                "sd2",
                lambda f: save_tiny_sd(f, channels=(64, 128, 256), layers=2, text_width=256, text_layers=6),
            ),
            ("flux", lambda f: save_tiny_flux(f, layers=6, single_layers=12)),
            ("sd-upscaler", lambda f: save_tiny_upscaler(f, channels=(64, 128, 256), text_width=256)),
            ("ldm-sr", lambda f: save_tiny_ldm_sr(f, channels=(64, 128, 256))),
        )
        for kind, save in builders:
            if args.only and kind != args.only:
                continue
            folder = save(Path(tmp) / kind)
            exact = ",color_fix=none,geometry=exact"  # at 4× the LR, as the stock pipeline samples
            extra = {"flux": f",max_sequence_length=8{exact}", "sd2": exact}.get(kind, "")
            spec = f"{kind}:model={folder},steps={args.steps},device=cpu,chunk_size={args.chunk}{extra}"
            model = resolve_spec(manager, "backbone", spec).build()
            pipe = whole_pipeline(kind, model)
            model.sample(lr[:1], [seeds[0][:2]])  # warm-up both
            run_stock(pipe, model, lr[:1], [seeds[0][:1]], args.steps)
            times, results = interleaved(
                {
                    "dp2o": lambda model=model: model.sample(lr, seeds).images,
                    "stock": lambda pipe=pipe, model=model: run_stock(pipe, model, lr, seeds, args.steps),
                },
                args.rounds,
                warmup=False,
            )
            ours = results["dp2o"].reshape(total, 3, 4 * args.lr_size, 4 * args.lr_size)
            diff = float((ours - results["stock"]).abs().max())
            ratio = Ratio.of(times["stock"], times["dp2o"])
            print(
                f"{kind:<5} sampling  stock {total / statistics.median(times['stock']):6.2f} img/s   "
                f"dp2o {total / statistics.median(times['dp2o']):6.2f} img/s  "
                f"ratio {ratio}   max |Δ| {diff:.1e}",
                flush=True,
            )

            if model.groups_per_call(args.candidates) > 1:
                # M below chunk_size: all groups' candidates in shared batches vs a call per group
                times, _ = interleaved(
                    {
                        "packed": lambda model=model: model.sample(lr, seeds),
                        "per group": lambda model=model: [
                            model.sample(lr[i : i + 1], [seeds[i]]) for i in range(args.inputs)
                        ],
                    },
                    args.rounds,
                )
                print(
                    f"{kind:<5} M = {args.candidates} < chunk {args.chunk}: groups packed in shared batches "
                    f"{Ratio.of(times['per group'], times['packed'])} faster than one call per group",
                    flush=True,
                )
            dp2o_bytes, naive_bytes = training_weight_bytes(model, pipe)
            print(
                f"{kind:<5} training weights  dp2o {dp2o_bytes / 2**20:7.1f} MiB   deep-copied pipeline "
                f"{naive_bytes / 2**20:7.1f} MiB   ratio {dp2o_bytes / naive_bytes:4.2f}×"
            )


if __name__ == "__main__":
    main()
