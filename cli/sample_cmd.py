"""``dp2o sample`` and ``dp2o upscale``: candidates for a run, and plain super-resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from dp2o_cli.options import BackboneSpec, ConfigFile, DataSpec, DegradationSpec, RunDir, Seed
from dp2o_cli.output import console
from dp2o_cli.prepare_cmd import prepare_data
from dp2o_cli.progress import stage_progress
from dp2o_cli.run_config import load_run_config, write_run_config
from dp2o_cli.state import CliState

from dp2o_core.errors import UsageError
from dp2o_core.imageio import (
    IMAGE_SUFFIXES,
    BadImageError,
    list_images,
    read_image_tensor,
    tensor_to_array,
    write_png,
)
from dp2o_core.stages.sample import run_sample_stage, sample_stage_config
from dp2o_core.store import ProcessInfo, RunStore

NumCandidates = Annotated[
    int, typer.Option("--num-candidates", "-m", min=1, help="Candidates per LR input (M).")
]


def sample(
    ctx: typer.Context,
    run: RunDir,
    backbone: BackboneSpec = None,
    data: DataSpec = None,
    degradation: DegradationSpec = None,
    config_file: ConfigFile = None,
    seed: Seed = None,
    num_candidates: NumCandidates = 32,
    shared_noise: Annotated[
        bool, typer.Option("--shared-noise", help="Candidate m of every group starts from seed + m.")
    ] = False,
) -> None:
    """Sample M candidates per LR input of RUN (runs the data stage first when --data is given)."""
    manager = ctx.ensure_object(CliState).manager
    config = load_run_config(
        config_file, run=run, backbone=backbone, data=data, degradation=degradation, seed=seed
    )
    store = RunStore(run)
    process = ProcessInfo.detect()
    keys = ("backbone", "data", "degradation") if config.data.name else ("backbone",)
    resolved = config.resolve(manager, keys)
    if config.data.name:
        prepare_data(store, resolved, config.seed, process)
    model = resolved["backbone"].build()
    if process.is_main:
        write_run_config(store, config, resolved, owns=("sample",))
    stage_config = sample_stage_config(
        resolved["backbone"].as_record(), config.seed, num_candidates, shared_noise
    )
    with stage_progress("sample", process.is_main, unit="images") as (start, advance):
        sampled = run_sample_stage(
            store,
            model,
            stage_config,
            seed=config.seed,
            count=num_candidates,
            shared_noise=shared_noise,
            process=process,
            on_start=start,
            on_progress=advance,
        )
    if process.is_main:
        status = store.status("sample")
        console.print(
            f"sample: {status.state} — {status.groups_done}/{status.groups_total} groups "
            f"({sampled} sampled now), {num_candidates} candidates each, in {run}"
        )


def upscale(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(metavar="INPUT", help="An LR image or a folder of them.")],
    target: Annotated[Path, typer.Argument(metavar="OUTPUT", help="Output image (for one input) or folder.")],
    backbone: BackboneSpec = None,
    config_file: ConfigFile = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the first candidate.")] = 0,
    num_candidates: NumCandidates = 1,
) -> None:
    """Super-resolve INPUT (a file or a folder) with a backbone; several candidates get _m suffixes."""

    manager = ctx.ensure_object(CliState).manager
    config = load_run_config(config_file, backbone=backbone)
    if source.is_dir():
        inputs = list_images(source)
        if not inputs:
            raise UsageError(f"no images in {source} ({', '.join(IMAGE_SUFFIXES)})")
        outputs = [target / p.relative_to(source).with_suffix(".png") for p in inputs]
    elif source.exists():
        inputs = [source]
        outputs = [target if target.suffix.lower() == ".png" else target / f"{source.stem}.png"]
    else:
        raise UsageError(f"input {source} does not exist")
    model = config.resolve(manager, ("backbone",))["backbone"].build()
    seeds = [seed + m for m in range(num_candidates)]
    with stage_progress("upscale", True, unit="images") as (start, advance):
        start(len(inputs) * num_candidates)
        for path, output in zip(inputs, outputs, strict=True):
            try:
                lr = read_image_tensor(path)
            except BadImageError as error:
                console.print(f"[yellow]skipped[/] {error}")
                continue
            images = model.sample(lr, [seeds]).images[0]
            for m, image in enumerate(images):
                array = tensor_to_array(image)
                name = (
                    output if num_candidates == 1 else output.with_name(f"{output.stem}_{m}{output.suffix}")
                )
                write_png(name, array)
            advance(num_candidates)
    console.print(f"upscale: {len(inputs)} inputs × {num_candidates} → {target}")
