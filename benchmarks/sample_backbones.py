"""Sampling candidates: dp2o's batched sampler vs the stock diffusers pipeline once per seed.

For each backbone (SD2-style and FLUX-style, tiny-but-not-trivial random configs built in
code, on the CPU) it samples M = 16 candidates for each of 4 LR inputs both ways, checks
that the images agree, and prints images per second and the ratio: the two ways run
interleaved (``--rounds`` rounds, each running both in an order that alternates), and the
ratio is the median over rounds of the per-round ratio with its spread (min–max). With M below
``--chunk``, it also times the groups' candidates packed into shared batches (one call for all
inputs) against one call per group. Then it compares the
weights held in memory for training: dp2o's policy + reference (a frozen copy of the
ControlNet only) against a deep copy of the whole pipeline as the reference.

    python benchmarks/sample_backbones.py [--steps 8] [--candidates 16] [--inputs 4] [--lr-size 32]
        [--rounds 3]
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
from tiny_models import save_tiny_flux, save_tiny_sd, stock_pipeline  # noqa: E402

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


def run_stock(pipe, model, kind: str, lr, seeds, steps: int):
    images = []
    for index in range(lr.shape[0]):
        control = model.upsample(lr[index : index + 1])
        size = control.shape[-1]
        for seed in seeds[index]:
            generator = torch.Generator().manual_seed(seed)
            if kind == "sd2":
                out = pipe(
                    prompt="",
                    negative_prompt=model.options.negative_prompt,
                    image=control,
                    num_inference_steps=steps,
                    guidance_scale=3.5,
                    generator=generator,
                    output_type="pt",
                    height=size,
                    width=size,
                )
            else:
                out = pipe(
                    prompt="",
                    control_image=control * 2 - 1,  # a tensor reaches the VAE as it is
                    num_inference_steps=steps,
                    guidance_scale=2.5,
                    generator=generator,
                    output_type="pt",
                    height=size,
                    width=size,
                    max_sequence_length=8,
                )
            images.append(out.images[0])
    return torch.stack(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--inputs", type=int, default=4)
    parser.add_argument("--lr-size", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of both ways")
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
        )
        for kind, save in builders:
            folder = save(Path(tmp) / kind)
            extra = ",max_sequence_length=8" if kind == "flux" else ""
            spec = f"{kind}:model={folder},steps={args.steps},device=cpu,color_fix=none"
            spec += f",chunk_size={args.chunk}{extra}"
            model = resolve_spec(manager, "backbone", spec).build()
            pipe = stock_pipeline(model)
            model.sample(lr[:1], [seeds[0][:2]])  # warm-up both
            run_stock(pipe, model, kind, lr[:1], [seeds[0][:1]], args.steps)
            times, results = interleaved(
                {
                    "dp2o": lambda model=model: model.sample(lr, seeds).images,
                    "stock": lambda pipe=pipe, model=model, kind=kind: run_stock(
                        pipe, model, kind, lr, seeds, args.steps
                    ),
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
            base = model.base
            text = [
                m for m in (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)) if m
            ]
            model.prepare_training()
            dp2o_bytes = weight_bytes(base, model.vae, model.controlnet, model._reference)
            naive_reference = copy.deepcopy(pipe)
            naive_bytes = weight_bytes(
                base,
                model.vae,
                model.controlnet,
                *text,
                *[m for m in naive_reference.components.values() if isinstance(m, torch.nn.Module)],
            )
            print(
                f"{kind:<5} training weights  dp2o {dp2o_bytes / 2**20:7.1f} MiB   deep-copied pipeline "
                f"{naive_bytes / 2**20:7.1f} MiB   ratio {dp2o_bytes / naive_bytes:4.2f}×"
            )


if __name__ == "__main__":
    main()
