"""Pretrain tiny-sr from scratch on scikit-image's bundled photographs (the training split).

This is the command that produced the weights bundled in ``tiny_sr/weights/``::

    python -m dp2o_plugins.backbones.tiny_sr.pretrain --out plugins/backbones/tiny_sr/weights

Each step takes a batch of random HR crops (with flips and 90° turns) of the ten training
photographs, makes their LR with dp2o's ``bicubic`` degradation (the embedded default's), and
regresses the residual velocity (``network`` module doc) at uniform timesteps. The weights
saved are an exponential moving average of the trained ones. ``training_log.csv`` and
``loss.png`` beside them record the loss curve. The held-out photographs (astronaut, chelsea)
are never read.
"""

from __future__ import annotations

import argparse
import copy
import csv
import time
from pathlib import Path

SCALE = 4


def training_photos():
    """The training-split photographs as 1×3×H×W tensors in [0, 1]."""
    from dp2o_plugins.datasets.photos import PhotosDataset

    from dp2o_core.imageio import read_image_tensor

    dataset = PhotosDataset(PhotosDataset.Options(split="train", crop=None))
    return [read_image_tensor(item.hr) for item in dataset.items()]


def random_batch(photos, size: int, count: int, generator):
    """``count`` random size×size HR crops with random flips and quarter turns, and their LR."""
    import torch
    from dp2o_plugins.degradations.bicubic import BicubicDegradation

    crops = []
    for _ in range(count):
        photo = photos[int(torch.randint(len(photos), (1,), generator=generator))]
        top = int(torch.randint(photo.shape[-2] - size + 1, (1,), generator=generator))
        left = int(torch.randint(photo.shape[-1] - size + 1, (1,), generator=generator))
        crop = photo[..., top : top + size, left : left + size]
        if torch.rand(1, generator=generator) < 0.5:
            crop = crop.flip(-1)
        crop = torch.rot90(crop, int(torch.randint(4, (1,), generator=generator)), dims=(-2, -1))
        crops.append(crop)
    hr = torch.cat(crops)
    lr = BicubicDegradation().degrade(hr, [0] * count, SCALE)
    return hr, lr


def upsample(lr):
    """Bicubic ×4 in [0, 1], as the backbone does."""
    from dp2o_core.imageio import upsample_bicubic

    return upsample_bicubic(lr, SCALE)


def residual_scaling_factor(photos, size: int, generator) -> float:
    """1 / standard deviation of HR − upsampled LR over 256 random crops."""
    hr, lr = random_batch(photos, size, 256, generator)
    return float(1.0 / (hr - upsample(lr)).std())


def main(argv: list[str] | None = None) -> None:
    """Train and write the model folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Model folder to write.")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--crop", type=int, default=64, help="HR crop size.")
    parser.add_argument("--lr", type=float, default=5e-4, help="Peak learning rate.")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--ema", type=float, default=0.998, help="EMA decay of the saved weights.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=25)
    args = parser.parse_args(argv)

    import math

    import torch
    from dp2o_plugins.backbones.tiny_sr.network import (
        TinySrSettings,
        image_velocity,
        new_scheduler,
        new_unet,
        save_model,
    )

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    photos = training_photos()
    settings = TinySrSettings(scaling_factor=round(residual_scaling_factor(photos, args.crop, generator), 3))
    unet, scheduler = new_unet(), new_scheduler()
    ema = copy.deepcopy(unet).requires_grad_(False)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)

    def learning_rate(step: int) -> float:  # linear warm-up, cosine decay to 10 %
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    args.out.mkdir(parents=True, exist_ok=True)
    log_rows, window, started = [], [], time.perf_counter()
    for step in range(args.steps):
        hr, lr = random_batch(photos, args.crop, args.batch_size, generator)
        up = upsample(lr)
        x0 = (hr - 0.5) * settings.scaling_factor
        noise = torch.randn(x0.shape, generator=generator)
        timesteps = torch.randint(
            0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator
        )
        alphas = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        x_t = alphas.sqrt() * x0 + (1 - alphas).sqrt() * noise
        target = alphas.sqrt() * noise - (1 - alphas).sqrt() * x0
        prediction = image_velocity(unet, scheduler, x_t, timesteps, up, settings.scaling_factor)
        loss = torch.nn.functional.mse_loss(prediction, target)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for kept, current in zip(ema.parameters(), unet.parameters(), strict=True):
                kept.lerp_(current, 1 - decay)
        window.append(loss.item())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            row = {
                "step": step + 1,
                "loss": sum(window) / len(window),
                "learning_rate": learning_rate(step),
                "seconds": round(time.perf_counter() - started, 1),
            }
            log_rows.append(row)
            window = []
            print(
                f"step {row['step']:5d}  loss {row['loss']:.4f}  lr {row['learning_rate']:.2e}  "
                f"{row['seconds']:.0f} s",
                flush=True,
            )
            if (step + 1) % (args.log_every * 20) == 0:
                save_model(args.out, ema, scheduler, settings)
    save_model(args.out, ema, scheduler, settings)
    _write_log(args.out, log_rows)
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")


def _write_log(folder: Path, rows: list[dict]) -> None:
    """``training_log.csv`` and a ``loss.png`` of the loss curve."""
    with open(folder / "training_log.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    axis.plot([r["step"] for r in rows], [r["loss"] for r in rows])
    axis.set_xlabel("step")
    axis.set_ylabel("v-prediction MSE")
    axis.set_yscale("log")
    axis.set_title("tiny-sr pretraining loss")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(folder / "loss.png")
    plt.close(figure)


if __name__ == "__main__":
    main()
