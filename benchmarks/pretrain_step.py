"""One supervised pretraining step at the paper's model sizes: ``dp2o pretrain`` vs diffusers'
``train_controlnet.py`` way.

The models are the published architectures with random weights (``benchmarks/real_size.py``
writes them; SD2-base, or FLUX.1's widths at ``--flux-depth``), loaded through the backbone's own
``from_pretrained`` path, with a new ControlNet (``controlnet=new``). One optimizer step of one
``--size``-px HR crop whose LR is made by bicubic degradation, gradient checkpointing on in both
ways:

* dp2o — ``Pretrainer`` as ``dp2o pretrain`` runs it: the frozen base network, VAE and text
  encoder(s) in bfloat16 (``dtype=bfloat16``; the trained ControlNet stays float32 and the
  forward passes autocast), the prompt embedded once and the text encoders freed, 8-bit AdamW
  where bitsandbytes runs on the device (``optimizer=auto``), the ControlNet's float32
  moving average (``ema``) kept on the device and counted;
* naive — diffusers' ``train_controlnet.py`` at its defaults: everything float32, the VAE
  and the text encoder run every step, torch AdamW, no moving average.

Each way runs in a fresh process, ``--rounds`` times, alternating which goes first. Printed:
peak memory (GPU: peak allocated; CPU: peak resident set above the process's size before any
model loaded), model state (weights, gradients, optimizer state and dp2o's moving average as
held) and steps per second, with the ratios dp2o / naive (median over rounds, min–max).

    python benchmarks/pretrain_step.py [--only sd2|flux] [--size 512] [--rounds 2] [--json]

On a CPU a step at 512 px takes about a minute and the naive SD2 way about 13 GiB.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from real_size import T5_LAYERS, backbone_spec, flux_depth, printed_figures, write_flux, write_sd2  # noqa: E402
from train_step import (  # noqa: E402
    alternating,
    in_fresh_process,
    model_state_bytes,
    modules_of,
    peak_since,
    reset_peak,
    summary,
)

from dp2o_core.registry import PluginManager  # noqa: E402
from dp2o_core.specs import resolve_spec  # noqa: E402


def write_photographs(folder: Path, size: int) -> list[Path]:
    """Two scikit-image photographs enlarged to at least ``size`` px (the HR data)."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("astronaut", "coffee"):
        image = Image.fromarray(getattr(data, name)())
        scale = max(1.0, (size + 16) / min(image.size))
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
        path = folder / f"{name}.png"
        image.save(path)
        paths.append(path)
    return paths


def spec_of(kind: str, model: Path, device: str, dtype: str) -> str:
    """The backbone spec: a new ControlNet for SD2, the written one for FLUX (new from_transformer)."""
    spec = backbone_spec(kind, model, device, dtype, gradient_checkpointing="true")
    return spec + (",controlnet=new" if kind == "sd2" else "")


def dp2o_steps(spec: str, photos: list[str], size: int, steps: int, warmup: int) -> tuple[float, int, int]:
    """``Pretrainer`` as the pretrain stage runs it."""
    from dp2o_plugins.degradations.bicubic import BicubicDegradation

    from dp2o_core.interfaces.dataset import DataItem
    from dp2o_core.training.pretrain_data import PretrainData
    from dp2o_core.training.pretrainer import Pretrainer
    from dp2o_core.training.settings import PretrainSettings
    from dp2o_core.training.trainer import make_accelerator

    baseline = reset_peak()
    backbone = resolve_spec(PluginManager(), "backbone", spec).build()
    settings = PretrainSettings(
        max_steps=warmup + steps, batch_size=1, micro_batch_size=1, crop=size, warmup_steps=0,
        tracker="none", checkpoint_every=10_000, validate_every=10_000,
    )  # fmt: skip
    items = [DataItem(Path(p).stem, Path(p), None) for p in photos]
    data = PretrainData(items, backbone, BicubicDegradation(), seed=0, crop=size)
    data.prepare()
    directory = Path(tempfile.mkdtemp(prefix="dp2o-pretrain-bench-"))
    trainer = Pretrainer(backbone, data, settings, directory, make_accelerator(settings, directory))
    made: list = []
    make_optimizer = trainer._optimizer
    trainer._optimizer = lambda parameters: made.append(make_optimizer(parameters)) or made[-1]
    times: list[float] = []
    trainer.run(resume=False, on_step=lambda m: times.append(time.perf_counter()))
    peak = peak_since(baseline)
    average = sum(t.numel() * t.element_size() for t in trainer._ema)
    state = model_state_bytes(modules_of(backbone), backbone.trainable_parameters(), made[0]) + average
    return steps / (times[-1] - times[warmup - 1]), peak, state


def naive_steps(spec: str, photos: list[str], size: int, steps: int, warmup: int) -> tuple[float, int, int]:
    """diffusers' train_controlnet.py: float32, VAE and text encoder every step, AdamW."""
    from dp2o_plugins.degradations.bicubic import BicubicDegradation

    from dp2o_core.imageio import read_image_tensor
    from dp2o_core.training.objective import per_sample_error

    baseline = reset_peak()
    model = resolve_spec(PluginManager(), "backbone", spec).build()
    model.controlnet.requires_grad_(True).train()
    model.controlnet.enable_gradient_checkpointing()
    model.base.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(model.controlnet.parameters(), lr=5e-5)
    images = [read_image_tensor(p) for p in photos]
    generator = torch.Generator().manual_seed(0)
    times = []
    for step in range(warmup + steps):
        hr = images[step % len(images)][..., :size, :size]
        lr = BicubicDegradation().degrade(hr, [step], model.scale)
        with torch.no_grad():
            x0 = model.encode(hr).float()
            condition = {**model.encode_condition(lr), **model._encode_prompt("")}
        t = model.sample_timesteps(1, generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        x_t, target = model.noisy(x0, noise, t)
        per_sample_error(model.predict(x_t, t, condition), target).mean().backward()
        torch.nn.utils.clip_grad_norm_(model.controlnet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter())
    peak = peak_since(baseline)
    state = model_state_bytes(modules_of(model), list(model.controlnet.parameters()), optimizer)
    return steps / (times[-1] - times[warmup - 1]), peak, state


WAYS = {"dp2o": dp2o_steps, "naive": naive_steps}


def benchmark(kind: str, folder: Path, args) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = folder / "model"
    if kind == "sd2":
        write_sd2(model, args.tiny)
    else:
        write_flux(model, *flux_depth(args.flux_depth), tiny=args.tiny, t5_layers=args.t5_layers)
    photos = [str(p) for p in write_photographs(folder / "hr", args.size)]
    specs = {
        "dp2o": spec_of(kind, model, device, "bfloat16"),
        "naive": spec_of(kind, model, device, "float32"),
    }
    figures = summary(
        alternating(
            args.rounds,
            lambda way: in_fresh_process(
                way, WAYS[way], specs[way], photos, args.size, args.steps, args.warmup
            ),
        )
    )
    header = f"{kind}: one {args.size}-px crop per step, {device}, {args.rounds} round(s)"
    return printed_figures(header, figures, size=args.size, device=device, rounds=args.rounds)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("sd2", "flux"), help="Benchmark one backbone.")
    parser.add_argument("--size", type=int, default=512, help="HR crop size in pixels (512: 64×64 latents).")
    parser.add_argument("--rounds", type=int, default=2, help="Fresh-process runs of each way, alternating.")
    parser.add_argument("--steps", type=int, default=1, help="Timed optimizer steps per run.")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed optimizer steps before them.")
    parser.add_argument("--flux-depth", default="1,1,4", help="FLUX double,single[,ControlNet] blocks.")
    parser.add_argument("--t5-layers", type=int, default=T5_LAYERS, help="T5-XXL layers kept (of 24).")
    parser.add_argument("--tiny", action="store_true", help="Small widths (a test of the code paths).")
    parser.add_argument("--json", action="store_true", help="End with one JSON line of the results.")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    results = {}
    for kind in [args.only] if args.only else ["sd2", "flux"]:
        with tempfile.TemporaryDirectory(prefix=f"dp2o-pretrain-{kind}-") as folder:
            results[kind] = benchmark(kind, Path(folder), args)
    if args.json:
        print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
