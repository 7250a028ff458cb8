"""DPO training steps: dp2o's trainer vs the naive way, for an SD2-style and a FLUX-style backbone.

Both ways compute the same weighted Diffusion-DPO loss with the same networks on the same
pairs (tiny-but-not-trivial random configs built in code, SD-like proportions, on the CPU):

* dp2o — ``Trainer`` on a run directory: candidate latents and condition encodings cached by
  the run, prompt embeddings stored (no VAE and no text encoder in the step), winner and
  loser in one batched pass, the reference a frozen copy of the ControlNet only;
* naive — VAE-encode winner and loser and run the text encoder(s) every step (and, for FLUX,
  VAE-encode the control image), a deep copy of the whole pipeline as the reference, winner
  and loser in separate forward passes.

Each way runs in a fresh process started by this script (so neither inherits the other's
freed memory); it prints steps per second and the peak memory of each (on the CPU: the peak
resident set size above the process's size before any model was loaded; on a GPU: peak
allocated memory), and the ratios (targets: ≥ 2× steps/s, ≤ 0.6× peak memory); also the model state (weights,
gradients and the optimizer's state as held), which is what the reference and caching strategies change.

    python benchmarks/train_step.py [--steps 6] [--pairs 4] [--micro-batch 1] [--size PX] [--only sd2|flux]
        [--rounds 3]

Each way runs ``--rounds`` times in fresh processes, alternating which goes first; every ratio
is the median over rounds with its spread (min–max).
"""

from __future__ import annotations

import argparse
import copy
import gc
import multiprocessing
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from queue import Empty

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from interleave import Ratio  # noqa: E402
from preference_run import make_preference_run  # noqa: E402
from sample_backbones import weight_bytes  # noqa: E402  (this folder is on sys.path when run as a script)
from tiny_models import save_tiny_flux, save_tiny_sd  # noqa: E402

from dp2o_core.registry import PluginManager  # noqa: E402
from dp2o_core.specs import resolve_spec  # noqa: E402
from dp2o_core.store import ProcessInfo, RunStore  # noqa: E402
from dp2o_core.training.data import TrainingData  # noqa: E402
from dp2o_core.training.objective import PairErrors, dpo_loss, per_sample_error  # noqa: E402
from dp2o_core.training.settings import TrainSettings  # noqa: E402
from dp2o_core.training.trainer import Trainer, make_accelerator  # noqa: E402

#: VAE at a quarter of SD's width, with SD's depth (its encoder is what caching saves).
VAE = {"block_out_channels": (32, 64, 128, 128), "layers_per_block": 2, "norm_num_groups": 32}
#: kind → (model maker, extra backbone options, HR size in pixels).
MODELS = {
    "sd2": (
        lambda f: save_tiny_sd(f, channels=(64, 128, 256), layers=2, text_width=256, text_layers=6, vae=VAE),
        "",
        128,
    ),
    # FLUX: a wide transformer and T5 beside a small VAE, as in FLUX.1 (12B / 4.7B / 84M), and
    # twice as many image tokens as text tokens, as at 512 px with 512 text tokens
    "flux": (
        lambda f: save_tiny_flux(
            f,
            layers=6,
            single_layers=12,
            heads=8,
            text_width=128,
            text_layers=6,
            vae={"block_out_channels": (16, 32, 64, 64), "layers_per_block": 2, "norm_num_groups": 16},
        ),
        ",max_sequence_length=128",
        256,
    ),
}
WARMUP_STEPS = 2


# -- memory ------------------------------------------------------------------------------------
def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> int:
    """Forget the peak memory (Linux clear_refs; CUDA peak stats) and return the current RSS."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def peak_since(baseline: int) -> int:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    return _status("VmHWM") - baseline


def modules_of(*objects) -> list[torch.nn.Module]:
    """Every network a backbone object (or its pipeline, or its dicts of encoders) holds."""
    found = []
    for obj in objects:
        values = list(vars(obj).values())
        for value in values:
            if isinstance(value, torch.nn.Module):
                found.append(value)
            elif isinstance(value, dict):
                values.extend(v for v in value.values() if not isinstance(v, dict))
            elif isinstance(value, tuple):  # e.g. (tokenizer, text encoder)
                values.extend(value)
            elif hasattr(value, "components"):  # a diffusers pipeline
                found.extend(v for v in value.components.values() if isinstance(v, torch.nn.Module))
    return found


def model_state_bytes(modules, trained, optimizer) -> int:
    """Weights and buffers (each storage once) + a gradient per trained weight + the optimizer's
    state as it is held (two float32 moments for AdamW, 8-bit blocks for AdamW8bit)."""
    held = sum(
        value.untyped_storage().nbytes()
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    )
    return weight_bytes(*modules) + sum(p.numel() * p.element_size() for p in trained) + held


# -- the two ways --------------------------------------------------------------------------------
def dp2o_steps(
    spec: str,
    run: RunStore,
    steps: int,
    pairs: int,
    micro: int,
    warmup: int = WARMUP_STEPS,
    optimizer: str = "adamw",
) -> tuple[float, int, int]:
    """dp2o's Trainer on the run: cached latents and prompts, fused passes, ControlNet-only reference."""
    baseline = reset_peak()
    backbone = resolve_spec(PluginManager(), "backbone", spec).build()
    settings = TrainSettings(
        max_steps=warmup + steps,
        batch_size=pairs,
        micro_batch_size=micro,
        learning_rate=1e-5,
        warmup_steps=0,
        tracker="none",
        checkpoint_every=10_000,
        optimizer=optimizer,
    )
    data = TrainingData(run, backbone, seed=0)
    data.prepare(ProcessInfo())
    directory = Path(tempfile.mkdtemp(prefix="dp2o-bench-"))
    trainer = Trainer(backbone, data, settings, directory, make_accelerator(settings, directory))
    made: list = []
    make_optimizer = trainer._optimizer
    trainer._optimizer = lambda parameters: made.append(make_optimizer(parameters)) or made[-1]
    times: list[float] = []
    trainer.run(resume=False, on_step=lambda m: times.append(time.perf_counter()))
    peak = peak_since(baseline)
    state = model_state_bytes(modules_of(backbone), backbone.trainable_parameters(), made[0])
    return steps / (times[-1] - times[warmup - 1]), peak, state


def naive_steps(
    spec: str,
    run: RunStore,
    steps: int,
    pairs: int,
    micro: int,
    warmup: int = WARMUP_STEPS,
    checkpointing: bool = False,
) -> tuple[float, int, int]:
    """Plain loop: encode images and prompts every step, full-pipeline reference, one pass each.
    What trains is the ControlNet where the backbone has one, else the UNet."""
    baseline = reset_peak()
    policy = resolve_spec(PluginManager(), "backbone", spec).build()
    encode_prompt = getattr(policy, "_encode_prompt", lambda text: {})  # ldm-sr reads no text
    encode_prompt("")  # load the text encoder(s): the naive loop runs them every step
    reference = copy.deepcopy(policy)  # the whole pipeline: base model, ControlNet, VAE, text encoders
    trained = getattr(policy, "controlnet", None) or policy.unet
    trained.requires_grad_(True).train()
    if checkpointing:
        trained.enable_gradient_checkpointing()
        if hasattr(policy, "base"):  # the frozen base network a ControlNet steers
            policy.base.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-5, weight_decay=0.01)
    data = TrainingData(run, policy, seed=0, cache=False)
    images = _candidate_images(run, data)
    lows = {g: data._read_lr(g) for g in data.group_ids}
    generator = torch.Generator().manual_seed(0)
    times = []
    for step in range(warmup + steps):
        chosen = [data.pairs[data.order[step * pairs + i]] for i in range(pairs)]
        optimizer.zero_grad(set_to_none=True)
        for pair in chosen:
            with torch.no_grad():
                x0_w = policy.encode(images[pair.group_id, pair.winner]).float()
                x0_l = policy.encode(images[pair.group_id, pair.loser]).float()
                prompt = encode_prompt("")
                condition = {**policy.encode_condition(lows[pair.group_id]), **prompt}
            t = policy.sample_timesteps(1, generator=generator)
            noise = torch.randn(x0_w.shape, generator=generator)
            errors = []
            for model, grad in ((policy, True), (reference, False)):
                for x0 in (x0_w, x0_l):
                    x_t, target = model.noisy(x0, noise, t)
                    with torch.set_grad_enabled(grad):
                        errors.append(per_sample_error(model.predict(x_t, t, condition), target))
            terms = dpo_loss(PairErrors(*errors[:2], *errors[2:]), torch.tensor([pair.weight]))
            (terms.loss / pairs).backward()
        torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
        optimizer.step()
        times.append(time.perf_counter())
    peak = peak_since(baseline)
    state = model_state_bytes(modules_of(policy, reference), list(trained.parameters()), optimizer)
    return steps / (times[-1] - times[warmup - 1]), peak, state


def _candidate_images(run, data: TrainingData) -> dict:
    from dp2o_core.imageio import read_image_tensor

    rows = run.read_table("sample", "candidates", columns=["group_id", "candidate", "image"]).to_pylist()
    return {(r["group_id"], r["candidate"]): read_image_tensor(run.root / r["image"]) for r in rows}


WAYS = {"dp2o": dp2o_steps, "naive": naive_steps}
FIGURES = ("steps_per_s", "peak_bytes", "state_bytes")


def alternating(rounds: int, run_way) -> dict[str, list[tuple[float, int, int]]]:
    """``run_way(way)`` for both ways, ``rounds`` times, alternating which goes first."""
    results: dict[str, list[tuple[float, int, int]]] = {"dp2o": [], "naive": []}
    for index in range(rounds):
        for way in ("dp2o", "naive") if index % 2 == 0 else ("naive", "dp2o"):
            results[way].append(run_way(way))
    return results


def summary(results: dict[str, list[tuple[float, int, int]]]) -> dict[str, tuple[float, float, Ratio]]:
    """For each figure (:data:`FIGURES`): dp2o's median, naive's median, the ratio dp2o / naive."""
    figures = {}
    for index, name in enumerate(FIGURES):
        ours, theirs = [r[index] for r in results["dp2o"]], [r[index] for r in results["naive"]]
        figures[name] = (statistics.median(ours), statistics.median(theirs), Ratio.of(ours, theirs))
    return figures


def _preload() -> None:
    """Import every library module either way uses, so that the memory baseline (taken after
    this) counts models, optimizer states and activations, not Python modules."""
    import accelerate  # noqa: F401
    import diffusers
    import peft  # noqa: F401
    import safetensors.torch  # noqa: F401
    import transformers
    from diffusers.pipelines.flux.pipeline_flux_controlnet import calculate_shift  # noqa: F401

    for name in (
        "AutoencoderKL",
        "ControlNetModel",
        "UNet2DConditionModel",
        "DDPMScheduler",
        "FluxControlNetModel",
        "FluxTransformer2DModel",
        "FlowMatchEulerDiscreteScheduler",
        "FluxControlNetPipeline",
    ):
        getattr(diffusers, name)
    for name in ("CLIPTextModel", "CLIPTokenizer", "T5EncoderModel", "T5TokenizerFast"):
        getattr(transformers, name)


def _child(function, args: tuple, knobs: dict, threads: int, queue) -> None:
    """Child process: ``function(*args, **knobs)``, after the libraries are imported, with the
    parent's thread count."""
    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    _preload()
    queue.put(function(*args, **knobs))


def in_fresh_process(name: str, function, *args, **knobs):
    """``function(*args, **knobs)`` in a fresh (spawned) process, so that it inherits no freed
    memory; ``function`` must be importable (module level). ``name`` names it when it dies."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_child, args=(function, args, knobs, torch.get_num_threads(), queue))
    child.start()
    while True:  # a child killed for memory never answers: notice it instead of waiting forever
        try:
            result = queue.get(timeout=5)
            break
        except Empty:
            if not child.is_alive():
                raise RuntimeError(
                    f"the {name} process died (exit status {child.exitcode}; -9 is the out-of-memory killer)"
                ) from None
    child.join()
    return result


def _run_way(way: str, spec: str, run_root: str, sizes: tuple[int, int, int], **knobs):
    return WAYS[way](spec, RunStore(run_root), *sizes, **knobs)


def measure(
    way: str, spec: str, run: RunStore, sizes: tuple[int, int, int], knobs: dict | None = None
) -> tuple[float, int, int]:
    """Run one way in a fresh (spawned) process; ``knobs`` are that way's keyword arguments."""
    return in_fresh_process(way, _run_way, way, spec, str(run.root), sizes, **(knobs or {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="Timed optimizer steps (after 2 warm-up steps).")
    parser.add_argument("--pairs", type=int, default=4, help="Pairs per optimizer step.")
    parser.add_argument(
        "--micro-batch",
        type=int,
        default=1,
        help="dp2o's pairs per pass (1: the naive loop's activation memory).",
    )
    parser.add_argument(
        "--size", type=int, help="HR size of the candidates in pixels (default: 128 for sd2, 256 for flux)."
    )
    parser.add_argument("--only", choices=sorted(MODELS), help="Benchmark one backbone.")
    parser.add_argument(
        "--rounds", type=int, default=3, help="Fresh-process runs of each way, alternating which goes first."
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    for kind in [args.only] if args.only else sorted(MODELS, reverse=True):
        make, extra, default_size = MODELS[kind]
        size = args.size or default_size
        with tempfile.TemporaryDirectory() as folder:
            model = make(Path(folder) / "model")
            spec = f"{kind}:model={model},device=cpu,geometry=exact{extra}"
            maker = resolve_spec(PluginManager(), "backbone", spec).build()
            run = make_preference_run(Path(folder), maker, held_out=0, size=size)
            del maker
            sizes = (args.steps, args.pairs, args.micro_batch)
            figures = summary(
                alternating(
                    args.rounds, lambda way, spec=spec, run=run, sizes=sizes: measure(way, spec, run, sizes)
                )
            )
            mib = 2**20
            speed, peak, state = figures["steps_per_s"], figures["peak_bytes"], figures["state_bytes"]
            print(
                f"{kind}: steps/s dp2o {speed[0]:.3f} naive {speed[1]:.3f} → {speed[2]} | "
                f"peak memory dp2o {peak[0] / mib:.0f} MiB naive {peak[1] / mib:.0f} MiB → {peak[2]} | "
                f"model state dp2o {state[0] / mib:.0f} MiB naive {state[1] / mib:.0f} MiB → {state[2]} "
                f"({args.pairs} pairs/step, dp2o {args.micro_batch} per pass, {size} px, "
                f"{torch.get_num_threads()} threads, {args.rounds} rounds; "
                "ratios dp2o/naive: median (min–max))",
                flush=True,
            )


if __name__ == "__main__":
    main()
