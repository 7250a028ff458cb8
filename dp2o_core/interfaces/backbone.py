"""The Backbone interface: an SR generator that can be sampled and preference-tuned."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from dp2o_core.interfaces.base import Implementation

if TYPE_CHECKING:
    import torch


@dataclass
class SampleResult:
    """What one call to :meth:`Backbone.sample` produced.

    ``images`` is B×M×3×H×W, RGB in [0, 1]: M candidates for each of B LR inputs.
    ``latents`` (B×M×…) are the model-space samples the images were decoded from, kept so
    that training never re-encodes them; None for pixel-space models with nothing to cache.
    ``seeds`` repeats the seeds used, one list per input.
    """

    images: torch.Tensor
    seeds: Sequence[Sequence[int]]
    latents: torch.Tensor | None = None


class Backbone(Implementation):
    """A stochastic SR generator: sampled for candidates, then tuned with Diffusion-DPO.

    Sampling side — :meth:`sample` makes M candidates per LR input in batched calls, one
    explicit seed per candidate, reproducible by seed.

    Training side — the DPO objective in the core only needs per-sample errors, which it
    gets from these pieces: :meth:`encode` (images → x₀, a VAE or the identity),
    :meth:`encode_condition` and :meth:`encode_prompts` (computed once and cached),
    :meth:`sample_timesteps`, :meth:`noisy` (x_t and the regression target: ε, v or the
    flow velocity ε − x₀, per the model's own scheduler config), :meth:`predict` for the
    policy or the frozen reference, and :meth:`trainable_parameters`. The reference holds
    only a frozen copy of the trained part (or is the policy with LoRA adapters off).

    Checkpoints — :meth:`save` writes what the backbone's own ecosystem loads without
    dp2o (diffusers ``save_pretrained``, or a single ``model.safetensors``).

    Example skeleton::

        from dp2o_core import Backbone, PluginOptions, SampleResult, hookimpl
        from pydantic import Field

        class MyBackbone(Backbone):
            \"\"\"My SR diffusion model.\"\"\"

            name = "my-sr"

            class Options(PluginOptions):
                weights: str = Field("org/my-sr", description="Hub id or local folder.")

            def __init__(self, options=None):
                super().__init__(options)
                import torch  # heavy imports happen here, not at module level
                ...

            def sample(self, lr, seeds, prompts=None): ...
            def encode(self, images): ...
            # … and the other abstract methods

        @hookimpl
        def register_backbones(register):
            register(MyBackbone, aliases=("my",))
    """

    kind: ClassVar[str] = "backbone"
    #: False for one-step deterministic models, which cannot give seed-diverse candidates.
    stochastic: ClassVar[bool] = True
    #: Upscaling factor from LR to HR (a class attribute; an instance may set its own from its weights).
    scale: int = 4
    #: The run settings of this backbone's setup in its paper — ``num_candidates`` (M) and the
    #: ``selector`` spec — used by ``dp2o train``, ``check`` and ``config`` when neither a flag,
    #: a config file nor the run's record sets them (C-FLUX: M = 64 with N/M = 1/16).
    paper_settings: ClassVar[Mapping[str, Any]] = {}
    #: Estimated peak memory of sampling, in bytes per output pixel of one candidate in a batch
    #: (activations and decoded images, beyond the loaded weights): what :meth:`sampling_memory`
    #: multiplies out. A conservative guess; a backbone sets its own measured figure.
    sampling_bytes_per_pixel: ClassVar[int] = 16 * 1024
    #: What sampling holds at the whole output's size, tiled or not, in bytes per output pixel of
    #: one candidate in a batch: its latents and noise, the blended model output, the scheduler's
    #: step, the decoded image and the colour fix (what tiling does not shrink).
    sampling_full_bytes_per_pixel: ClassVar[int] = 128

    @classmethod
    def output_scale(cls, options: Any) -> int:
        """The upscaling factor an instance made with ``options`` will have, known before it is
        built (the preflight's size and disk checks): :attr:`scale` unless an option sets it."""
        return int(cls.scale)

    # -- sampling -----------------------------------------------------------------
    @abstractmethod
    def sample(
        self,
        lr: torch.Tensor,
        seeds: Sequence[Sequence[int]],
        prompts: Sequence[str] | None = None,
    ) -> SampleResult:
        """Super-resolve each LR image (B×3×h×w in [0, 1]) once per seed in ``seeds[b]``."""

    def sampling_memory(self, height: int, width: int, count: int) -> int:
        """Estimated peak memory (bytes, beyond the loaded weights) of sampling ``count``
        candidates of one ``height``×``width`` LR image: checked before an input is decoded, so an
        image too large for the device is refused with its name instead of exhausting memory.
        The default counts one batch of ``options.chunk_size`` candidates (all of them for a
        backbone without that option) at :attr:`sampling_bytes_per_pixel` over the part of the
        output the model sees at once (:meth:`sampling_window`: a tile, for a backbone that
        tiles) and at :attr:`sampling_full_bytes_per_pixel` over the whole output, and every
        finished candidate as float32 RGB."""
        chunk = getattr(getattr(self, "options", None), "chunk_size", None) or count
        pixels = height * width * self.scale**2
        window = self.sampling_window(height * self.scale, width * self.scale)
        seen = window[0] * window[1]  # the pixels the model's activations span at once
        batch = min(count, int(chunk))
        held = pixels * (batch * self.sampling_full_bytes_per_pixel + count * 12)
        return seen * batch * self.sampling_bytes_per_pixel + held

    def sampling_window(self, height: int, width: int) -> tuple[int, int]:
        """The largest part of a ``height`` × ``width`` output the model sees at once: all of
        it, or at most a ``tile`` × ``tile`` square for a backbone whose options tile large
        images (:class:`~dp2o_core.options.TiledSamplingOptions`)."""
        tile = int(getattr(getattr(self, "options", None), "tile", 0) or 0)
        return (min(height, tile), min(width, tile)) if tile else (height, width)

    @property
    def sampling_device(self) -> str:
        """The device sampling runs on (``cpu``, ``cuda:0``): whose free memory
        :meth:`sampling_memory` is compared with."""
        return str(getattr(self, "device", "cpu"))

    def groups_per_call(self, num_candidates: int) -> int:
        """How many groups (LR images of one size) the sample stage — and ``dp2o eval`` and
        ``dp2o upscale``, their inputs — pass to one :meth:`sample` call when each has
        ``num_candidates`` seeds. The default, 1, samples group by group; a
        backbone that batches candidates returns more when M is small, so that several groups
        fill one batch."""
        return 1

    # -- training -----------------------------------------------------------------
    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N×3×H×W in [0, 1]) → x₀ in the space the model denoises."""

    @abstractmethod
    def encode_condition(self, lr: torch.Tensor) -> Mapping[str, torch.Tensor]:
        """The conditioning derived from LR images, cacheable per group."""

    def encode_prompts(self, prompts: Sequence[str]) -> Mapping[str, torch.Tensor]:
        """Prompt embeddings (and pooled embeddings where the model uses them); cacheable.

        Backbones without text conditioning keep this default, which returns nothing.
        """
        return {}

    def prompt_cache(self) -> Mapping[str, Mapping[str, torch.Tensor]]:
        """Every prompt text embedded so far and its embeddings (for the run store)."""
        return {}

    def load_prompt_cache(self, cache: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        """Embeddings stored by an earlier run: with them no text encoder is loaded."""

    def release_text_encoders(self) -> None:
        """Free the text encoders once every prompt is embedded (training does not need them)."""

    def release_image_encoder(self) -> None:
        """Free the networks only :meth:`encode` and :meth:`encode_condition` use (a VAE
        encoder); the trainer calls this when every x₀ and condition comes from the run's
        caches. Sampling still works afterwards; encoding does not."""

    def prepare_training(self) -> None:
        """Make the trained part trainable and set up the frozen reference.

        The trainer calls this once, before its first step and before it restores a
        checkpoint, so the reference is always the model as loaded.
        """

    def prepare_pretraining(self) -> None:
        """Make the trained part trainable for supervised pretraining (``dp2o pretrain``), which
        needs no reference. The default calls :meth:`prepare_training`, so any backbone that DPO
        can train can be pretrained; a backbone overrides this to skip the reference's memory."""
        self.prepare_training()

    @abstractmethod
    def sample_timesteps(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` training timesteps drawn from the backbone's training distribution."""

    @abstractmethod
    def noisy(
        self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, target) for the model's prediction type, from its scheduler config."""

    @abstractmethod
    def predict(
        self,
        x_t: torch.Tensor,
        timesteps: torch.Tensor,
        condition: Mapping[str, torch.Tensor],
        *,
        reference: bool = False,
    ) -> torch.Tensor:
        """The policy's prediction, or the frozen reference's when ``reference`` is True."""

    @abstractmethod
    def trainable_parameters(self) -> Iterable[torch.nn.Parameter]:
        """The parameters preference tuning updates (the ControlNet by default)."""

    # -- checkpoints ----------------------------------------------------------------
    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the tuned weights in a format the backbone's ecosystem loads without dp2o."""

    def tuned_options(self, directory: Path) -> Mapping[str, str]:
        """Options that make this backbone load what :meth:`save` wrote to ``directory``.

        ``dp2o train`` prints the ``dp2o upscale --backbone`` spec built from them.
        """
        return {}

    def describe(self) -> Mapping[str, Any]:
        """Facts worth recording with a run (model ids, prediction type, dtype)."""
        return {}
