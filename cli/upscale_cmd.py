"""``dp2o upscale``: plain super-resolution of an image or a folder with any backbone.

Every output name is decided before the model loads: one PNG per input (``_m`` suffixes
for several candidates), unique even when two inputs differ only in their suffix, and
never the path of an input, so an upscale cannot overwrite what it reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from dp2o_cli.options import BackboneSpec, ConfigFile, NumOutputs, PrompterSpec
from dp2o_cli.output import console, error_console
from dp2o_cli.progress import stage_progress
from dp2o_cli.run_config import load_run_config
from dp2o_cli.state import CliState
from rich.markup import escape

from dp2o_core.errors import UsageError
from dp2o_core.imageio import (
    IMAGE_SUFFIXES,
    BadImageError,
    list_images,
    read_image_tensor,
    tensor_to_array,
    write_png,
)
from dp2o_core.memory import refuse_too_large
from dp2o_core.preflight import component_checks, ensure

#: Inputs above this many pixels get a warning before they are upscaled by a backbone that does
#: not tile: memory and time grow with the output's pixel count (16× the input's at scale 4).
LARGE_INPUT_PIXELS = 1024 * 1024


@dataclass(frozen=True)
class UpscaleJob:
    """One input image and the output file of each of its candidates."""

    source: Path
    outputs: tuple[Path, ...]


def plan_upscale(source: Path, target: Path, num_candidates: int) -> list[UpscaleJob]:
    """The input files under ``source`` and the output files each one writes.

    A folder keeps its sub-folders under ``target``; ``a.jpg`` and ``a.png`` in one folder
    become ``a_jpg.png`` and ``a_png.png``. Raises :class:`UsageError` when an output
    would be one of the inputs.
    """
    if source.is_dir():
        inputs = list_images(source)
        if not inputs:
            raise UsageError(f"no images in {source} ({', '.join(IMAGE_SUFFIXES)})")
        stems = [target / p.relative_to(source).with_suffix("") for p in inputs]
    elif source.exists():
        if target.is_dir() or target.suffix.lower() != ".png":
            target = target / source.name
        inputs, stems = [source], [target.with_suffix("")]
    else:
        raise UsageError(f"input {source} does not exist")
    shared = {stem for stem in stems if stems.count(stem) > 1}
    jobs = []
    for path, stem in zip(inputs, stems, strict=True):
        if stem in shared:  # a.jpg and a.png: keep the suffix in the name
            stem = stem.with_name(f"{stem.name}_{path.suffix.lower().lstrip('.')}")
        names = (
            [stem.with_name(stem.name + ".png")]
            if num_candidates == 1
            else [stem.with_name(f"{stem.name}_{m}.png") for m in range(num_candidates)]
        )
        jobs.append(UpscaleJob(path, tuple(names)))
    _refuse_collisions(jobs)
    return jobs


def _refuse_collisions(jobs: Sequence[UpscaleJob]) -> None:
    inputs = {job.source.resolve(): job.source for job in jobs}
    seen: dict[Path, Path] = {}
    for job in jobs:
        for output in job.outputs:
            resolved = output.resolve()
            if resolved in inputs:
                raise UsageError(
                    f"upscale would overwrite its input {inputs[resolved]} with the output of "
                    f"{job.source}; choose another OUTPUT (a new file name or folder)"
                )
            if resolved in seen:
                raise UsageError(
                    f"{seen[resolved]} and {job.source} would both write {output}; rename one of them"
                )
            seen[resolved] = job.source


def upscale(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(metavar="INPUT", help="An LR image or a folder of them.")],
    target: Annotated[Path, typer.Argument(metavar="OUTPUT", help="Output PNG (for one input) or folder.")],
    backbone: BackboneSpec = None,
    prompter: PrompterSpec = None,
    config_file: ConfigFile = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first candidate.")] = 0,
    num_candidates: NumOutputs = 1,
    on_bad_image: Annotated[
        Literal["error", "skip"],
        typer.Option("--on-bad-image", help="Stop at an unusable input (error) or skip and list it (skip)."),
    ] = "error",
) -> None:
    """Super-resolve INPUT (a file or a folder) with a backbone; several candidates get _m suffixes.

    Outputs are PNG; an output never replaces an input, and inputs that share a name
    (a.jpg, a.png) get distinct outputs (a_jpg.png, a_png.png). Each input's prompt is the
    --prompter's: by default its sidecar NAME.txt, else the backbone's prompt option.
    """
    manager = ctx.ensure_object(CliState).manager
    config = load_run_config(config_file, backbone=backbone, prompter=prompter)
    jobs = plan_upscale(source, target, num_candidates)
    resolved = config.resolve(manager, ("backbone", "prompter"))
    ensure([*component_checks(resolved["backbone"]), *component_checks(resolved["prompter"])])
    model, prompting = resolved["backbone"].build(), resolved["prompter"].build()
    seeds = [seed + m for m in range(num_candidates)]
    with stage_progress("upscale", True, unit="images") as (start, advance):
        start(len(jobs) * num_candidates)
        written, skipped = upscale_jobs(model, jobs, seeds, on_bad_image, advance, prompting)
    for bad in skipped:
        console.print(f"[yellow]skipped[/] {escape(str(bad.path))}: {escape(bad.reason)}")
    summary = f"upscale: {written} inputs × {num_candidates} → {target}"
    if skipped:
        summary += f"; {len(skipped)} skipped"
    console.print(summary)


def upscale_jobs(
    model, jobs: Sequence[UpscaleJob], seeds: list[int], on_bad_image: str, advance, prompter=None
):
    """Read, sample and write every job; returns (inputs written, bad inputs skipped). Inputs of
    one size are packed into one sampling call as the sample stage packs groups (with one
    candidate each, SD2 samples eight inputs per batch), each read only when its batch fills;
    each is sampled with ``prompter``'s prompt (given its sidecar ``.txt``)."""
    import torch
    from dp2o_plugins.datasets.prompts import prompt_for

    from dp2o_core.interfaces.prompter import prompts_for

    written, skipped = 0, []
    pending: list[tuple[UpscaleJob, Any]] = []  # (job, its LR tensor) waiting for a sampling call
    per_call = max(1, model.groups_per_call(len(seeds)))

    def flush() -> None:
        nonlocal written
        if not pending:
            return
        lrs = [lr for _, lr in pending]
        given = [prompt_for(job.source, job.source.parent, {}) for job, _ in pending]
        prompts = [
            text or "" for text in prompts_for(prompter, [tensor_to_array(lr[0]) for lr in lrs], given)
        ]
        images = model.sample(torch.cat(lrs), [seeds] * len(pending), prompts).images
        for (job, _), candidates in zip(pending, images, strict=True):
            for image, output in zip(candidates, job.outputs, strict=True):
                write_png(output, tensor_to_array(image))
            written += 1
            advance(len(seeds))
        pending.clear()

    for job in jobs:
        try:
            refuse_too_large(job.source, model, len(seeds))  # from the header: nothing decoded yet
            lr = read_image_tensor(job.source)
        except BadImageError as error:
            if len(jobs) == 1:  # one input: skipping it would leave nothing to do
                raise error.unskippable() from None
            if on_bad_image == "error":
                raise
            skipped.append(error)
            advance(len(seeds))
            continue
        height, width = lr.shape[-2:]
        window = model.sampling_window(height * model.scale, width * model.scale)
        tiled = window != (height * model.scale, width * model.scale)
        if height * width > LARGE_INPUT_PIXELS and not tiled:
            error_console.print(
                f"[yellow]warning[/]: {escape(str(job.source))} is {width}×{height} px; upscaling it "
                "needs memory and time in proportion to the output's pixel count, and this backbone "
                "does not tile. Crop it if it runs out."
            )
        if pending and (len(pending) == per_call or pending[0][1].shape != lr.shape):
            flush()
        pending.append((job, lr))
    flush()
    return written, skipped
