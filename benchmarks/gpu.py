"""Real-size throughput and memory on one GPU, in one short run (about 5 minutes).

For SD2 (the published SD2-base UNet, its ControlNet, VAE and OpenCLIP-H text tower, random
weights) and FLUX (FLUX.1's widths at ``--flux-depth`` double,single blocks), all in bfloat16:

1. sampling: M = ``--candidates`` candidates of one 512 px input, dp2o's batched sampler
   (all M in one batch) against the stock diffusers pipeline called once per seed, interleaved
   over ``--rounds`` — images/s (medians), the median ratio with its spread, and the achieved
   TFLOP/s of the batched sampler;
2. training: one DPO optimizer step of one pair (benchmarks/real_size.py: dp2o's trainer and
   the naive loop, each in a fresh process) — pairs/s, peak memory of each, the ratios;
   the FLOPs of one dp2o step (counted by torch's FlopCounterMode on the executed step,
   gradient-checkpointing recomputation included) give its achieved TFLOP/s and, against the
   GPU's dense bfloat16 peak, its model-FLOP utilisation (MFU).

FLOPs are counted once in an untimed call. ``--tiny`` builds the same architectures at a small
width and runs everything on the CPU in float32 (a test of the code paths, tests/test_benchmarks.py).
``--json`` ends the output with one JSON line.

    python benchmarks/gpu.py [--tiny] [--candidates 32] [--size 512] [--steps 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from interleave import Ratio, interleaved  # noqa: E402
from real_size import T5_LAYERS, backbone_spec, flux_depth, write_flux, write_sd2  # noqa: E402
from real_size import benchmark as training_benchmark  # noqa: E402
from tiny_models import stock_pipeline  # noqa: E402

from dp2o_core.registry import PluginManager  # noqa: E402
from dp2o_core.specs import resolve_spec  # noqa: E402

#: Dense bfloat16 tensor-core peak, TFLOP/s, by a substring of the device name (vendor sheets).
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "H800": 989.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "RTX 6000 Ada": 364.0,
    "RTX 4090": 165.0,
    "A6000": 155.0,
    "A10": 125.0,
    "RTX 3090": 71.0,
}


def peak_tflops(name: str) -> float | None:
    """The device's dense bfloat16 peak (None where unknown: pass --peak-tflops)."""
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def flops_of(function) -> int:
    """Floating-point operations ``function()`` executes (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def stock_sampling(pipe, model, kind: str, control, seeds, steps: int):
    """The stock pipeline once per seed, with the backbone's own settings."""
    images = []
    size = control.shape[-1]
    for seed in seeds:
        generator = torch.Generator(model.device).manual_seed(seed)
        common = dict(
            num_inference_steps=steps, generator=generator, output_type="pt", height=size, width=size
        )
        if kind == "sd2":
            out = pipe(
                prompt="",
                negative_prompt=model.options.negative_prompt,
                image=control.to(model.dtype),
                guidance_scale=model.options.guidance_scale,
                **common,
            )
        else:
            out = pipe(
                prompt="",
                control_image=(control * 2 - 1).to(model.dtype),  # a tensor reaches the VAE as it is
                guidance_scale=model.options.guidance_scale,
                max_sequence_length=model.options.max_sequence_length,
                **common,
            )
        images.append(out.images[0])
    return torch.stack(images)


def sampling(kind: str, model_dir: Path, args, device: str, dtype: str) -> dict:
    """Images/s of dp2o's batched sampler and of the stock pipeline per seed; achieved TFLOP/s."""
    spec = backbone_spec(
        kind, model_dir, device, dtype, steps=args.steps, chunk_size=args.candidates, color_fix="none"
    )
    model = resolve_spec(PluginManager(), "backbone", spec).build()
    pipe = stock_pipeline(model)
    lr = torch.rand(1, 3, args.size // 4, args.size // 4, generator=torch.Generator().manual_seed(0))
    seeds = list(range(args.candidates))
    model.sample(lr, [seeds[:2]])  # warm-up: kernels, prompt embeddings
    control = model.upsample(lr).to(model.device)
    stock_sampling(pipe, model, kind, control, seeds[:1], args.steps)

    def ours():
        model.sample(lr, [seeds])
        synchronize()

    def theirs():
        stock_sampling(pipe, model, kind, control, seeds, args.steps)
        synchronize()

    times, _ = interleaved({"dp2o": ours, "stock": theirs}, args.rounds, warmup=False)
    ratio = Ratio.of(times["stock"], times["dp2o"])
    ours_s, stock_s = statistics.median(times["dp2o"]), statistics.median(times["stock"])
    flops = flops_of(lambda: model.sample(lr, [seeds]))
    result = {
        "images_per_s": args.candidates / ours_s,
        "stock_images_per_s": args.candidates / stock_s,
        "ratio": ratio.median,
        "ratio_spread": ratio.as_dict(),
        "tflops_per_s": flops / ours_s / 1e12,
        "flops": flops,
    }
    return result


def step_flops(kind: str, model_dir: Path, run_root: Path, device: str, dtype: str) -> int:
    """FLOPs of one dp2o DPO step of one pair, as the trainer runs it (autocast in the frozen dtype)."""
    from dp2o_core.store import ProcessInfo, RunStore
    from dp2o_core.training.data import TrainingData
    from dp2o_core.training.objective import dpo_loss, pair_errors

    spec = backbone_spec(kind, model_dir, device, dtype, gradient_checkpointing="true")
    backbone = resolve_spec(PluginManager(), "backbone", spec).build()
    backbone.prepare_training()
    data = TrainingData(RunStore(run_root), backbone, seed=0)
    data.prepare(ProcessInfo())
    batch = data.batch([0], device)
    precision = getattr(torch, dtype)

    def step():
        with torch.autocast(device_type=device, dtype=precision, enabled=precision != torch.float32):
            errors = pair_errors(
                backbone, batch.x0_winner, batch.x0_loser, batch.condition, batch.timesteps, batch.noise
            )
            terms = dpo_loss(errors, batch.weights)
        (terms.weights * terms.pair_loss).sum().backward()

    return flops_of(step)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="Small widths, CPU, float32 (a test).")
    parser.add_argument("--only", choices=("sd2", "flux"), help="One backbone.")
    parser.add_argument("--candidates", type=int, default=32, help="M, sampled in one batch by dp2o.")
    parser.add_argument("--size", type=int, default=512, help="HR size in pixels.")
    parser.add_argument("--steps", type=int, default=20, help="Denoising steps per candidate.")
    parser.add_argument(
        "--rounds", type=int, default=2, help="Interleaved sampling rounds of both ways (median ratio)."
    )
    parser.add_argument("--train-steps", type=int, default=3, help="Timed DPO steps (after 1 warm-up).")
    parser.add_argument(
        "--flux-depth", default="1,2", help="FLUX transformer double,single[,ControlNet double] blocks."
    )
    parser.add_argument("--peak-tflops", type=float, help="The GPU's dense bf16 peak (default: by name).")
    parser.add_argument("--json", action="store_true", help="End with one JSON line of the results.")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    cuda = torch.cuda.is_available() and not args.tiny
    device = "cuda" if cuda else "cpu"
    dtype = "bfloat16" if cuda else "float32"
    name = torch.cuda.get_device_name() if cuda else "CPU"
    peak = args.peak_tflops or (peak_tflops(name) if cuda else None)
    print(f"{name}; {dtype}; M = {args.candidates} at {args.size} px, {args.steps} steps", flush=True)
    results: dict = {"device": name, "dtype": dtype, "peak_bf16_tflops": peak}
    for kind in [args.only] if args.only else ["sd2", "flux"]:
        with tempfile.TemporaryDirectory(prefix=f"dp2o-gpu-{kind}-") as folder:
            model_dir = Path(folder) / "model"
            if kind == "sd2":
                write_sd2(model_dir, args.tiny)
            else:
                write_flux(model_dir, *flux_depth(args.flux_depth), tiny=args.tiny)
            sample = sampling(kind, model_dir, args, device, dtype)
            training_args = argparse.Namespace(
                size=args.size, steps=args.train_steps, warmup=1, rounds=1, tiny=args.tiny,
                flux_depth=args.flux_depth, t5_layers=T5_LAYERS, dtype="bfloat16",
            )  # fmt: skip
            train = training_benchmark(kind, Path(folder), training_args)
            flops = step_flops(kind, model_dir, Path(folder) / "run", device, dtype)
            achieved = flops * train["steps_per_s"] / 1e12
            train |= {
                "pairs_per_s": train["steps_per_s"],
                "step_flops": flops,
                "tflops_per_s": achieved,
                "mfu": achieved / peak if peak else None,
            }
            sample["mfu"] = sample["tflops_per_s"] / peak if peak else None
            results[kind] = {"sampling": sample, "training": train}
            mfu = f"{train['mfu']:.1%}" if train["mfu"] is not None else "n/a"
            print(
                f"{kind}: sampling dp2o {sample['images_per_s']:.2f} img/s, stock per seed "
                f"{sample['stock_images_per_s']:.2f} img/s → {sample['ratio']:.2f}×, "
                f"{sample['tflops_per_s']:.1f} TFLOP/s\n"
                f"{kind}: DPO step {train['pairs_per_s']:.3f} pairs/s "
                f"(naive {train['naive_steps_per_s']:.3f}), "
                f"{achieved:.1f} TFLOP/s, MFU {mfu}, peak memory dp2o {train['peak_gib']:.1f} GiB "
                f"vs naive {train['naive_peak_gib']:.1f} GiB ({train['peak_memory_ratio']:.2f}×)",
                flush=True,
            )
    if args.json:
        print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
