"""What backbones share whose UNet is tuned and whose model is one diffusers pipeline folder
(tiny-sr, sd-upscaler, ldm-sr): candidates sampled a chunk at a time per input, the whole UNet
(with a frozen copy as the DPO reference) or LoRA adapters on its attention (the reference is
the UNet with them switched off) as what training updates, and the folder as both what is
loaded and what a tuned model is saved as."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from dp2o_plugins.backbones.lora import attach_lora, load_lora, lora_off, save_lora, train_only_lora
from pydantic import Field

from dp2o_core import TiledSamplingOptions, runtime_option, training_option
from dp2o_core.errors import Dp2oError

#: The ``trainable`` value that trains LoRA adapters on the UNet instead of the whole UNet.
LORA_UNET = "lora-unet"


class PipelineFolderOptions(TiledSamplingOptions):
    """The options of a pipeline-folder backbone besides its model and schedule: DDIM's η, the
    batch, the device, recomputation — and the tiles."""

    eta: float = Field(
        0.0, ge=0, le=1, description="DDIM η (0: deterministic steps; 1: fresh noise each step)."
    )
    chunk_size: int = runtime_option(8, ge=1, description="Candidates denoised together in one batch.")
    device: str = runtime_option("auto", description="Torch device ('auto' picks cuda when available).")
    gradient_checkpointing: bool = runtime_option(False, description="Recompute activations in backward.")
    trainable: Literal["unet", "lora-unet"] = training_option(
        "unet",
        description="What preference tuning updates: the whole UNet, or LoRA adapters on its attention.",
    )
    lora_rank: int = training_option(16, ge=1, description="Rank of the LoRA adapters (trainable=lora-unet).")
    lora: str | None = Field(
        None, description="lora.safetensors saved by dp2o (with trainable=lora-unet), applied to the UNet."
    )


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
    """Mixin: preference tuning updates ``self.unet`` — every parameter (kept in float32)
    against a frozen copy made when training is prepared, or, with ``trainable=lora-unet``,
    LoRA adapters whose reference is the UNet with them switched off (no copy). Pretraining
    keeps no copy."""

    unet: Any
    options: Any
    _reference: Any = None

    @property
    def trains_lora(self) -> bool:
        """Whether LoRA adapters, not the whole UNet, are what training updates."""
        return getattr(self.options, "trainable", "unet") == LORA_UNET

    def load_adapters(self) -> None:
        """Apply the ``lora`` option's adapters to the UNet (call once the UNet is loaded)."""
        lora = getattr(self.options, "lora", None)
        if lora is None:
            return
        if not self.trains_lora:
            raise Dp2oError(f"option lora={lora} needs trainable={LORA_UNET} (the part it adapts)")
        load_lora(self.unet, lora, self.options.lora_rank)

    def policy_or_reference(self, reference: bool) -> Any:
        """The UNet that predicts: for the reference, the frozen copy (once there is one) or,
        with LoRA, the UNet called with its adapters off."""
        if reference and self.trains_lora:
            return _WithoutAdapters(self.unet)
        return self._reference if reference and self._reference is not None else self.unet

    def prepare_training(self) -> None:
        """Keep a frozen copy as the reference (whole UNet); make what trains trainable."""
        if self._reference is None and not self.trains_lora:
            self._reference = copy.deepcopy(self.unet).requires_grad_(False).eval()
        self.prepare_pretraining()

    def prepare_pretraining(self) -> None:
        """Make the UNet — or its adapters — trainable, in float32 whatever the model's dtype
        (no reference)."""
        import torch

        if self.trains_lora:
            attach_lora(self.unet, self.options.lora_rank)
            train_only_lora(self.unet)
        else:
            self.unet.to(torch.float32).requires_grad_(True).train()
        if getattr(self.options, "gradient_checkpointing", False):
            self.unet.enable_gradient_checkpointing()

    def trainable_parameters(self) -> Iterable[Any]:
        """What training updates, once prepared: every UNet parameter, or the adapters'."""
        return [p for p in self.unet.parameters() if p.requires_grad]

    def saved_adapters(self, directory: Path) -> bool:
        """With LoRA, write ``lora.safetensors`` into ``directory`` and say so (the backbone's
        ``save`` then writes nothing else); without, write nothing."""
        if not self.trains_lora:
            return False
        Path(directory).mkdir(parents=True, exist_ok=True)
        save_lora(self.unet, Path(directory) / "lora.safetensors")
        return True


class _WithoutAdapters:
    """A UNet called with its LoRA adapters switched off: the DPO reference without a copy."""

    def __init__(self, unet: Any) -> None:
        self.unet = unet

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with lora_off(self.unet):
            return self.unet(*args, **kwargs)


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
        from dp2o_plugins.backbones.loading import file_check, model_checks

        who = f"backbone {cls.name}"
        return [*model_checks(who, options.model, cls.model_parts), *file_check(who, "lora", options.lora)]

    def tuned_options(self, directory: Path) -> dict[str, str]:
        """``model=DIR`` (the saved folder is a whole pipeline), or with LoRA the adapters on
        the model trained from: ``lora=DIR/lora.safetensors``."""
        if self.options.trainable == LORA_UNET:
            return {"lora": str(Path(directory) / "lora.safetensors"), "trainable": LORA_UNET}
        return {"model": str(directory)}

    def describe(self) -> Mapping[str, Any]:
        """Model source and prediction type, recorded with a run."""
        return {"model": self.options.model, "prediction_type": self.scheduler.config.prediction_type}
