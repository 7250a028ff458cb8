"""What the SD2 and FLUX ControlNet backbones share: devices, ControlNet loading, the
sampling loop over inputs and chunks, colour fix, trainable parts, the reference, saving.

A subclass loads its base model, names its ControlNet class and the base network that
LoRA may adapt, and implements ``_denoise`` (one chunk of candidates of one LR image), the
prompt encoder and the training pieces of :class:`~dp2o_core.Backbone`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from dp2o_plugins.backbones.colorfix import color_fix
from dp2o_plugins.backbones.controlnet_files import describe_state_dict, fit_problem
from dp2o_plugins.backbones.geometry import AuthorsGeometry
from dp2o_plugins.backbones.loading import (
    drop_unknown_config_keys,
    load_component,
    load_state_dict_file,
    resolve_device,
)
from dp2o_plugins.backbones.lora import attach_lora, load_lora, lora_off, save_lora, train_only_lora
from dp2o_plugins.backbones.prompts import CachedPrompts
from dp2o_plugins.backbones.vae_tiles import vae_tiles
from pydantic import Field

from dp2o_core import Backbone, SampleResult, TiledSamplingOptions, runtime_option, training_option
from dp2o_core.errors import Dp2oError
from dp2o_core.imageio import pad_to_multiple, resize_pillow, upsample_pillow
from dp2o_core.tiling import Window, plan_model_windows

#: The ``controlnet`` value that asks for a ControlNet made from the base model.
NEW_CONTROLNET = "new"


class ControlNetOptions(TiledSamplingOptions):
    """Options every ControlNet SR backbone has (``tile`` and ``overlap`` among them: 512 and 64
    output pixels, the size the released models were trained at)."""

    controlnet: str | None = Field(
        None,
        description="The SR ControlNet: a model.safetensors state dict (the released DP²O-SR files), a "
        "diffusers folder or hub id, or 'new' — made from the base model, it ignores the LR image "
        "until trained, so sampling with it needs this explicit choice.",
    )
    conditioning_scale: float = Field(
        1.0,
        ge=0,
        description="Strength of the ControlNet's residuals (diffusers' controlnet_conditioning_scale), in "
        "sampling and training alike: 1 for the DP²O-SR models, 0.6 in jasperai's FLUX upscaler example.",
    )
    geometry: Literal["authors", "exact"] = Field(
        "authors",
        description="How an LR's size becomes the size the networks work at. authors: as the DP²O-SR "
        "scripts — an LR with a side below process_size/scale is first enlarged (Pillow bicubic), the "
        "×scale control image's sides are rounded down to the grid and the output is resized back to "
        "scale × the LR; exact: at scale × the LR, padded to the grid and cropped back (no resampling).",
    )
    process_size: int = Field(
        512, ge=16, description="geometry=authors: the output size below which an input is enlarged first."
    )
    upscale: int = Field(
        4,
        ge=1,
        le=8,
        description="The output's size over the input's (the authors' scripts' --upscale): 4 for LR images "
        "at their own size; 1 for LR images stored at the output size (RealSR's registered LR), which are "
        "the control image as they are.",
    )
    prompt: str = Field("", description="Prompt for every image that has no prompt of its own.")
    color_fix: Literal["adain", "wavelet", "none"] = Field(
        "adain", description="Colour correction against the upsampled LR."
    )
    chunk_size: int = runtime_option(
        8, ge=1, description="Candidates denoised together in one batch (bounds memory)."
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="Precision of the networks."
    )
    device: str = runtime_option("auto", description="Torch device ('auto' picks cuda when available).")
    lora_rank: int = training_option(
        16, ge=1, description="Rank of LoRA adapters (when a LoRA part is trained)."
    )
    lora: str | None = Field(
        None,
        description="lora.safetensors saved by dp2o, applied to the part that trainable (lora-…) names.",
    )
    gradient_checkpointing: bool = runtime_option(
        False, description="Recompute activations in the backward pass."
    )


class ControlNetBackbone(CachedPrompts, Backbone):
    """Shared machinery; not registered itself."""

    #: Attribute name of the base network LoRA may adapt ('unet' or 'transformer').
    base_attribute = ""
    #: The sub-folders of the base model this backbone loads (what readiness looks for).
    model_parts: tuple[str, ...] = ()
    #: Set by each backbone's constructor: the ControlNet, the VAE, the text encoders (None once
    #: released; their layout is the backbone's own).
    controlnet: Any
    vae: Any
    #: the VAE's downsampling factor (8), set by each backbone's constructor from its config
    vae_scale: int
    _text: Any = None

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self.scale = self.options.upscale

    @classmethod
    def output_scale(cls, options: Any) -> int:
        return int(options.upscale)

    @classmethod
    def readiness(cls, options: Any) -> list:
        """The base model (folder, Hugging Face cache or hub), the ControlNet — given, and
        fitting this backbone as far as its file's header tells — and the LoRA file, looked up,
        not loaded."""
        from dp2o_plugins.backbones.loading import file_check, model_checks

        who = f"backbone {cls.name}"
        return [
            *model_checks(who, options.model, cls.model_parts),
            *cls._controlnet_checks(who, options),
            *file_check(who, "lora", options.lora),
        ]

    @classmethod
    def _controlnet_checks(cls, who: str, options: Any) -> list:
        from dp2o_plugins.backbones.loading import file_check

        from dp2o_core.preflight import Check
        from dp2o_core.weightfiles import safetensors_problem, safetensors_shapes

        source = options.controlnet
        if source == NEW_CONTROLNET:
            return []
        if source is None:
            return [
                Check(
                    who, "controlnet (none given)", "missing",
                    problem="without controlnet= the ControlNet is made from the base model; its outputs "
                    "start at zero, so it ignores the LR image and its samples are not super-resolutions",
                    fix="pass controlnet=PATH — a released DP²O-SR model.safetensors (C-SD2, C-FLUX, "
                    "DP²O-…), a diffusers folder or one a dp2o run saved — or controlnet=new to start from "
                    "the base model on purpose",
                )
            ]  # fmt: skip
        path = Path(source).expanduser()
        if not path.exists() and _is_repo_id(source):
            from dp2o_plugins.network import cached_or_hub_check

            return [cached_or_hub_check(who, source, ("config.json",), local="controlnet")]
        checks = file_check(who, "controlnet", source)
        if checks and checks[0].ok and path.suffix == ".safetensors" and not safetensors_problem(path):
            problem = cls.controlnet_file_problem(options, safetensors_shapes(path))
            if problem:
                return [
                    Check(who, f"controlnet {path}", "missing", problem=problem,
                          fix="give the ControlNet file made for this backbone and base model")
                ]  # fmt: skip
        return checks

    @classmethod
    def controlnet_file_problem(cls, options: Any, shapes: Mapping[str, Sequence[int]]) -> str | None:
        """Why a ControlNet state dict (tensor names and shapes) cannot be this backbone's
        ControlNet, or None when it may be: each backbone says what it builds."""
        return None

    def _setup_device(self) -> None:
        import torch

        o = self.options
        self.device = resolve_device(o.device)
        self.dtype = getattr(torch, o.dtype)
        self._prompt_cache: dict[str, dict[str, Any]] = {}
        self._reference: Any = None

    def _load_controlnet(self, cls, fresh):
        """The ControlNet from a state dict file, a folder or hub id, or ``fresh()`` for 'new'
        (and for library use with none given; the preflight refuses that for a run)."""
        source = self.options.controlnet
        if source in (None, NEW_CONTROLNET):
            return _seeded(fresh)
        path = Path(source).expanduser()
        if path.is_file():
            controlnet = _seeded(fresh)
            state = load_state_dict_file(path)
            found = {key: tuple(tensor.shape) for key, tensor in state.items()}
            expected = {key: tuple(tensor.shape) for key, tensor in controlnet.state_dict().items()}
            problem = fit_problem(expected, found)
            if problem:
                raise Dp2oError(
                    f"{path} is {describe_state_dict(found)}, not the ControlNet {self.name} builds "
                    f"({describe_state_dict(expected)}): {problem}"
                )
            controlnet.load_state_dict(state, strict=True)
            return controlnet
        return load_component(cls, source, "controlnet" if (path / "controlnet").is_dir() else None)

    @property
    def base(self):
        """The frozen base network (UNet or transformer)."""
        return getattr(self, self.base_attribute)

    # -- sampling ------------------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        """What the sides of an image the networks see must be multiples of: the VAE's
        downsampling (8 for SD2; FLUX overrides it with 16, its latents being packed 2×2)."""
        return int(self.vae_scale)

    def pad_to_grid(self, images):
        """``images`` padded at the bottom and right, by repeating the edge pixels, to sides that
        are multiples of :attr:`size_multiple` (unchanged when they already are). Sampling
        crops its outputs back, so any input size gives exactly ``scale`` × its size; encoding
        pads the same way, so training sees the geometry sampling used."""
        return pad_to_multiple(images, self.size_multiple)

    @property
    def authors_geometry(self) -> AuthorsGeometry | None:
        """The DP²O-SR scripts' input geometry (option ``geometry=authors``), or None (exact)."""
        if self.options.geometry != "authors":
            return None
        return AuthorsGeometry(self.scale, self.options.process_size, self.size_multiple)

    def to_working_size(self, images):
        """Output-sized images (candidates, HR images) as the networks see them: resized to the
        working size of their LR (``geometry=authors``) or padded to the grid (exact) — so
        their latents fit the control image :meth:`upsample` makes of that LR."""
        geometry = self.authors_geometry
        return self.pad_to_grid(images) if geometry is None else geometry.working_images(images)

    def windows(self, height: int, width: int) -> list[Window]:
        """The latent tiles a ``height`` × ``width`` latent is denoised in (one: all of it, when
        the output fits the ``tile`` option); on the grid :attr:`size_multiple` sets."""
        o = self.options
        grid = self.size_multiple // self.vae_scale
        return plan_model_windows(height, width, o.tile, o.overlap, pixels_per_unit=self.vae_scale, grid=grid)

    def is_tiled(self, control) -> bool:
        """Whether an image of ``control``'s size (the padded control image) is denoised in tiles."""
        return len(self.windows(control.shape[-2] // self.vae_scale, control.shape[-1] // self.vae_scale)) > 1

    def vae_tiling(self, on: bool):
        """diffusers' VAE tiling for the block, when ``on`` (:func:`vae_tiles`)."""
        return vae_tiles(self.vae, on, self.options.tile, self.vae_scale)

    def upsample(self, lr):
        """The control image in [0, 1], from the LR as 8-bit RGB by Pillow's bicubic, as the
        DP²O-SR authors' scripts make it: at their working size (``geometry=authors``), or
        enlarged ×scale and padded to the size grid (exact)."""
        geometry = self.authors_geometry
        if geometry is None:
            return self.pad_to_grid(upsample_pillow(lr, self.scale))
        return geometry.control_images(lr)

    def sample(
        self, lr, seeds: Sequence[Sequence[int]], prompts: Sequence[str] | None = None
    ) -> SampleResult:
        """M candidates per LR image, one generator per candidate, denoised in batches of
        ``chunk_size`` candidates. The candidates of all images of one call share those batches,
        so several small groups (M below ``chunk_size``) fill one batch; a group's candidates
        are the same whichever batch they land in, up to floating-point rounding."""
        import torch

        controls, prepared = [], []
        for index in range(lr.shape[0]):
            control = self.upsample(lr[index : index + 1]).to(self.device)
            text = prompts[index] if prompts and prompts[index] else self.options.prompt
            controls.append(control)
            prepared.append(self._prepare_group(control, text))
        output = (lr.shape[-2] * self.scale, lr.shape[-1] * self.scale)  # the outputs' exact size
        # what the networks' outputs are cropped to: the output (exact: the control image is
        # padded), or the control image's own size (authors: resized to the output below)
        geometry = self.authors_geometry
        height, width = output if geometry is None else geometry.working_size(*lr.shape[-2:])
        jobs = [(index, int(seed)) for index in range(lr.shape[0]) for seed in seeds[index]]
        parts: list[list[Any]] = [[] for _ in controls]
        for start in range(0, len(jobs), self.options.chunk_size):
            chunk = jobs[start : start + self.options.chunk_size]
            generators = [torch.Generator(self.device).manual_seed(seed) for _, seed in chunk]
            with torch.no_grad():
                decoded = self._denoise([prepared[index] for index, _ in chunk], generators)
            for row, (index, _) in enumerate(chunk):
                parts[index].append(decoded[row : row + 1, :, :height, :width])
        images, latents = [], []
        for index, control in enumerate(controls):
            unpadded = control[..., :height, :width]
            group = color_fix(torch.cat(parts[index]).float(), unpadded, self.options.color_fix)
            if tuple(group.shape[-2:]) != output:
                # the scripts resize their colour-fixed image, which ToPILImage truncated to 8 bits
                eight_bit = group if self.options.color_fix == "none" else (group * 255).floor() / 255
                group = resize_pillow(eight_bit, *output)
            images.append(group.cpu())
            with torch.no_grad(), self.vae_tiling(self.is_tiled(control)):
                latents.append(self.encode(group).float().cpu())
        return SampleResult(
            images=torch.stack(images), seeds=[list(s) for s in seeds], latents=torch.stack(latents)
        )

    def groups_per_call(self, num_candidates: int) -> int:
        """Groups whose candidates fill one ``chunk_size`` batch (at least one)."""
        return max(1, self.options.chunk_size // max(1, num_candidates))

    def _prepare_group(self, control, prompt: str) -> Any:
        """Work shared by every candidate of one LR image (condition and prompt encodings)."""
        raise NotImplementedError

    def _denoise(self, prepared: Sequence[Any], generators: list) -> Any:
        """Images in [0, 1] for one chunk of candidates: ``prepared[i]`` (the work shared by
        candidate i's group) and ``generators[i]`` for candidate i."""
        raise NotImplementedError

    # -- training ---------------------------------------------------------------------------
    def _load_lora(self) -> None:
        """Apply saved LoRA weights (option ``lora``) to the part ``trainable`` names."""
        if not self.options.trainable.startswith("lora-"):
            raise Dp2oError(
                f"option lora={self.options.lora} needs trainable=lora-… naming the part it adapts"
            )
        load_lora(self._lora_target(), self.options.lora, self.options.lora_rank)
        self._lora_target().to(self.device, self.dtype)

    def prepare_training(self) -> None:
        """Make the trainable part trainable and set up the frozen reference (once)."""
        import torch

        o = self.options
        if o.trainable == "controlnet":
            self._reference = copy.deepcopy(self.controlnet).requires_grad_(False).eval()
            # trained weights stay float32 whatever the frozen networks' dtype (mixed precision)
            self.controlnet.to(torch.float32).requires_grad_(True).train()
        else:
            target = self._lora_target()
            if not getattr(target, "peft_config", None):
                attach_lora(target, o.lora_rank)
                target.to(self.device, self.dtype)
            train_only_lora(target)
        if o.gradient_checkpointing:
            for module in (self.controlnet, self.base):
                module.enable_gradient_checkpointing()

    def prepare_pretraining(self) -> None:
        """A trained ControlNet without a frozen copy (pretraining has no reference); LoRA
        training prepares as for DPO (its reference is the adapters switched off, no copy)."""
        import torch

        if self.options.trainable != "controlnet":
            self.prepare_training()
            return
        self.controlnet.to(torch.float32).requires_grad_(True).train()
        if self.options.gradient_checkpointing:
            for module in (self.controlnet, self.base):
                module.enable_gradient_checkpointing()

    def _lora_target(self):
        return self.controlnet if self.options.trainable == "lora-controlnet" else self.base

    def trainable_parameters(self) -> Iterable[Any]:
        """The parameters preference tuning updates."""
        return [p for m in (self.controlnet, self.base) for p in m.parameters() if p.requires_grad]

    def _model_inputs(self, x_t, condition):
        """x_t and the condition in the frozen networks' dtype."""
        return x_t.to(self.dtype), {key: value.to(self.dtype) for key, value in condition.items()}

    def _networks(self, reference: bool):
        """(controlnet to use, context that switches LoRA adapters off for the reference)."""
        if not reference:
            return self.controlnet, contextlib.nullcontext()
        if self.options.trainable == "controlnet":
            return (
                self._reference if self._reference is not None else self.controlnet
            ), contextlib.nullcontext()
        return self.controlnet, lora_off(self._lora_target())

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """``controlnet/`` (diffusers folder) and ``model.safetensors`` (the official layout),
        or ``lora.safetensors`` (peft state dict) when LoRA adapters were trained."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.options.trainable == "controlnet":
            self.controlnet.save_pretrained(directory / "controlnet")
            drop_unknown_config_keys(directory / "controlnet", type(self.controlnet))
            state = {k: v.detach().contiguous().cpu() for k, v in self.controlnet.state_dict().items()}
            save_file(state, str(directory / "model.safetensors"))
        else:
            save_lora(self._lora_target(), directory / "lora.safetensors")

    def _freeze(self, *modules) -> None:
        for module in modules:
            module.to(self.device, self.dtype).eval().requires_grad_(False)
        if self.options.lora is not None:
            self._load_lora()

    def release_image_encoder(self) -> None:
        """Drop the VAE encoder (its decoder stays, so the model still samples)."""
        self.vae.encoder = None
        self.vae.quant_conv = None

    def _vae_encode(self, images):
        """The VAE posterior of images in [0, 1]."""
        if self.vae.encoder is None:
            raise Dp2oError(
                f"the VAE encoder of this {self.name} backbone was released for training from cached "
                "latents; build the backbone again to encode images"
            )
        return self.vae.encode(self.to_working_size(images).to(self.device, self.dtype) * 2 - 1).latent_dist

    def tuned_options(self, directory: Path) -> dict[str, str]:
        """``controlnet=DIR`` (the saved ControlNet), or ``lora=DIR/lora.safetensors``."""
        if self.options.trainable == "controlnet":
            return {"controlnet": str(directory)}
        return {"lora": str(Path(directory) / "lora.safetensors"), "trainable": self.options.trainable}


def _seeded(make):
    """``make()`` with a fixed torch seed: a new ControlNet's randomly initialised layers (the
    condition embedding) are the same in every process and every run."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return make()


def batch_rows(prepared: Sequence[Any], part: Callable[[Any], Any]) -> Any:
    """``part(p)`` (a tensor with a batch dimension of one) for each candidate's prepared group
    work ``p``, as one tensor: expanded, not copied, when every candidate is of the same group."""
    import torch

    first = prepared[0]
    if all(p is first for p in prepared):
        tensor = part(first)
        return tensor.expand(len(prepared), *tensor.shape[1:])
    return torch.cat([part(p) for p in prepared])


def _is_repo_id(source: str) -> bool:
    """Whether ``source`` is a Hugging Face model id (namespace/name)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(source)
    except HFValidationError:
        return False
    return "/" in source
