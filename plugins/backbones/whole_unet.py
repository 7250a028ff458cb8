"""What backbones share whose whole UNet is tuned and whose model is one diffusers pipeline
folder (tiny-sr, sd-upscaler, ldm-sr): candidates sampled a chunk at a time per input, the
frozen copy as the DPO reference, and the folder as both what is loaded and what a tuned
model is saved as."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from dp2o_core import TiledSamplingOptions, runtime_option


class PipelineFolderOptions(TiledSamplingOptions):
    """The options of a pipeline-folder backbone besides its model and schedule: DDIM's η, the
    batch, the device, recomputation — and the tiles."""

    eta: float = Field(
        0.0, ge=0, le=1, description="DDIM η (0: deterministic steps; 1: fresh noise each step)."
    )
    chunk_size: int = runtime_option(8, ge=1, description="Candidates denoised together in one batch.")
    device: str = runtime_option("auto", description="Torch device ('auto' picks cuda when available).")
    gradient_checkpointing: bool = runtime_option(False, description="Recompute activations in backward.")


def sample_in_chunks(
    seeds: Sequence[Sequence[int]],
    chunk_size: int,
    device: Any,
    prepare: Callable[[int], Any],
    denoise: Callable[[Any, list], Any],
) -> Any:
    """The candidates of every input, B × M × 3 × H × W on the CPU: for input b, ``prepare(b)``
    once (its condition), then its seeds ``chunk_size`` at a time, each candidate with a
    generator seeded with its own seed — so a candidate is the same whichever chunk it lands
    in — and ``denoise(prepared, generators)`` giving the chunk's images."""
    import torch

    images = []
    for index, group in enumerate(seeds):
        prepared = prepare(index)
        parts = []
        for start in range(0, len(group), chunk_size):
            generators = [
                torch.Generator(device).manual_seed(int(s)) for s in group[start : start + chunk_size]
            ]
            with torch.no_grad():
                parts.append(denoise(prepared, generators).cpu())
        images.append(torch.cat(parts))
    return torch.stack(images)


class WholeUnetTraining:
    """Mixin: preference tuning updates every parameter of ``self.unet`` (kept in float32)
    against a frozen copy made when training is prepared; pretraining keeps no copy."""

    unet: Any
    options: Any
    _reference: Any = None

    def policy_or_reference(self, reference: bool) -> Any:
        """The UNet that predicts: the frozen copy for the reference (once there is one)."""
        return self._reference if reference and self._reference is not None else self.unet

    def prepare_training(self) -> None:
        """Keep a frozen copy as the reference; make the UNet trainable."""
        if self._reference is None:
            self._reference = copy.deepcopy(self.unet).requires_grad_(False).eval()
        self.prepare_pretraining()

    def prepare_pretraining(self) -> None:
        """Make the UNet trainable, in float32 whatever the model's dtype (no reference)."""
        import torch

        self.unet.to(torch.float32).requires_grad_(True).train()
        if getattr(self.options, "gradient_checkpointing", False):
            self.unet.enable_gradient_checkpointing()

    def trainable_parameters(self) -> Iterable[Any]:
        """Every UNet parameter once training is prepared."""
        return [p for p in self.unet.parameters() if p.requires_grad]


class PipelineFolderModel:
    """Mixin: the model is a diffusers pipeline folder or hub id (option ``model``) with the
    parts ``model_parts``; a tuned model is saved as such a folder (``model=DIR``)."""

    name: ClassVar[str]
    model_parts: ClassVar[tuple[str, ...]] = ()
    options: Any
    scheduler: Any

    @classmethod
    def readiness(cls, options: Any) -> list:
        """Every part of the pipeline folder, looked up (on disk, in the cache or on the hub)."""
        from dp2o_plugins.backbones.loading import model_checks

        return model_checks(f"backbone {cls.name}", options.model, cls.model_parts)

    def tuned_options(self, directory: Path) -> dict[str, str]:
        """``model=DIR``: the saved folder is a whole pipeline."""
        return {"model": str(directory)}

    def describe(self) -> Mapping[str, Any]:
        """Model source and prediction type, recorded with a run."""
        return {"model": self.options.model, "prediction_type": self.scheduler.config.prediction_type}
