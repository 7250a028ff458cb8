"""Pretraining data: random HR crops and the LR the run's degradation makes of them, online.

Every example is a pure function of the run seed and its global position (step × batch size +
its index in the step): which HR image, where the crop lies, its flip and quarter turn, whether
its prompt is dropped, the degradation's randomness, the timestep and the noise. A resumed run,
or one with another number of processes or micro-batch size, sees exactly the same examples;
no LR file is ever written.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dp2o_core.errors import UsageError
from dp2o_core.imageio import array_to_tensor, image_size, read_image
from dp2o_core.interfaces.dataset import DataItem
from dp2o_core.store.fingerprint import derive_seed


@dataclass
class CropBatch:
    """The tensors of a micro-batch of pretraining examples (first dimension: the examples)."""

    x0: torch.Tensor
    condition: dict[str, torch.Tensor]
    timesteps: torch.Tensor
    noise: torch.Tensor


@dataclass(frozen=True)
class CropChoice:
    """Where one example comes from: an HR image, a crop of it and how it is turned."""

    item: int
    top: int
    left: int
    flip: bool
    turns: int
    null_prompt: bool


def hr_items(dataset: Any) -> list[DataItem]:
    """The data set's items that have an HR image; refuses a data set without any."""
    items = [item for item in dataset.items() if item.hr is not None]
    if not items:
        raise UsageError(
            f"data set {dataset.name!r} has no HR images: pretraining makes its LR inputs from HR images "
            "(use e.g. --data hr:path=FOLDER)"
        )
    return items


def hr_image_problems(items: Sequence[DataItem], crop: int) -> list[str]:
    """One line per HR image that pretraining cannot crop: unreadable (its header), or smaller
    than ``crop`` on a side. Headers only, so a data set of 30,000 images is checked in seconds."""
    from dp2o_core.imageio import BadImageError

    found = []
    for item in items:
        try:
            width, height = image_size(item.hr)  # type: ignore[arg-type]
        except BadImageError as error:
            found.append(f"{error.path}: {error.reason}")
            continue
        if min(width, height) < crop:
            found.append(f"{item.hr}: {width}×{height} pixels, smaller than the {crop}-pixel crop")
    return found


class PretrainData:
    """Random HR crops of a data set with their LR, conditions, timesteps and noises."""

    def __init__(
        self,
        items: Sequence[DataItem],
        backbone: Any,
        degradation: Any,
        *,
        seed: int,
        crop: int,
        null_prompt_ratio: float = 0.0,
        images_kept: int = 64,
        prompts_kept: int = 256,
    ) -> None:
        self.items = list(items)
        self.backbone = backbone
        self.degradation = degradation
        self.seed = seed
        self.crop = crop
        self.null_prompt_ratio = null_prompt_ratio
        self._sizes: dict[int, tuple[int, int]] = {}
        self._images: OrderedDict[int, Any] = OrderedDict()
        self._prompts: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._images_kept, self._prompts_kept = images_kept, prompts_kept

    def __len__(self) -> int:
        return len(self.items)

    #: up to this many distinct prompts are embedded before training and the text encoders freed
    PROMPTS_EMBEDDED_AHEAD = 256

    def prepare(self) -> bool:
        """Embed every prompt the examples can have and free the text encoders, when there are
        at most :attr:`PROMPTS_EMBEDDED_AHEAD` of them (data without sidecar prompts has one, the
        empty prompt); with more, each is embedded when first used. Returns whether the encoders
        were freed."""
        texts = sorted({item.prompt or "" for item in self.items} | {""})
        if len(texts) > self.PROMPTS_EMBEDDED_AHEAD:
            return False
        self._prompts_kept = max(self._prompts_kept, len(texts))
        for text in texts:
            self._prompt(text)
        self.backbone.release_text_encoders()
        return True

    #: batches encode HR crops and conditions every step (the trainer keeps the image encoder)
    needs_encoder = True

    # -- the examples ------------------------------------------------------------------------
    def _generator(self, position: int) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(self.seed, "pretrain", position) % 2**63)

    def choice(self, position: int, generator: torch.Generator) -> CropChoice:
        """The HR image, crop and turn of the example at ``position`` (draws from ``generator``)."""
        item = int(torch.randint(len(self.items), (1,), generator=generator))
        height, width = self._size(item)
        top = int(torch.randint(height - self.crop + 1, (1,), generator=generator))
        left = int(torch.randint(width - self.crop + 1, (1,), generator=generator))
        flip = bool(torch.rand(1, generator=generator) < 0.5)
        turns = int(torch.randint(4, (1,), generator=generator))
        null_prompt = bool(torch.rand(1, generator=generator) < self.null_prompt_ratio)
        return CropChoice(item, top, left, flip, turns, null_prompt)

    def hr_crop(self, choice: CropChoice) -> torch.Tensor:
        """The 1×3×crop×crop HR crop in [0, 1] that ``choice`` names."""
        image = self._image(choice.item)
        crop = array_to_tensor(
            image[choice.top : choice.top + self.crop, choice.left : choice.left + self.crop]
        )
        if choice.flip:
            crop = crop.flip(-1)
        return torch.rot90(crop, choice.turns, dims=(-2, -1)).contiguous()

    def pairs(self, positions: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, list[CropChoice]]:
        """(HR crops, their LR, the choices) of the examples at ``positions``."""
        choices = [self.choice(p, self._generator(p)) for p in positions]
        hr = torch.cat([self.hr_crop(c) for c in choices])
        seeds = [derive_seed(self.seed, "pretrain-degradation", p) for p in positions]
        lr = self.degradation.degrade(hr, seeds, self.backbone.scale)
        return hr, lr.clamp(0, 1), choices

    def batch(self, positions: Sequence[int], device: torch.device | str) -> CropBatch:
        """The examples at these global positions, encoded for a training step."""
        hr, lr, choices = self.pairs(positions)
        with torch.no_grad():
            x0 = self.backbone.encode(hr).float()
            condition = dict(self.backbone.encode_condition(lr))
        texts = ["" if c.null_prompt else (self.items[c.item].prompt or "") for c in choices]
        embeddings = [self._prompt(text) for text in texts]
        if embeddings[0]:
            condition |= {key: torch.cat([e[key] for e in embeddings]) for key in embeddings[0]}
        timesteps, noise = [], []
        for position in positions:  # after the choice's draws, a generator of its own per example
            generator = torch.Generator().manual_seed(
                derive_seed(self.seed, "pretrain-noise", position) % 2**63
            )
            timesteps.append(self.backbone.sample_timesteps(1, generator=generator).cpu())
            noise.append(torch.randn(x0.shape[1:], generator=generator))
        return CropBatch(
            x0=x0.to(device),
            condition={key: value.detach().to(device) for key, value in condition.items()},
            timesteps=torch.cat(timesteps).to(device),
            noise=torch.stack(noise).to(device=device, dtype=x0.dtype),
        )

    # -- pieces --------------------------------------------------------------------------------
    def _size(self, index: int) -> tuple[int, int]:
        """(height, width) of an HR image, from its header."""
        if index not in self._sizes:
            width, height = image_size(self.items[index].hr)  # type: ignore[arg-type]
            self._sizes[index] = (height, width)
        return self._sizes[index]

    def _image(self, index: int) -> Any:
        """The decoded HR image (8-bit H×W×3: a quarter of float32's memory), kept while recent."""
        if index not in self._images:
            self._images[index] = read_image(self.items[index].hr)  # type: ignore[arg-type]
            while len(self._images) > self._images_kept:
                self._images.popitem(last=False)
        self._images.move_to_end(index)
        return self._images[index]

    def _prompt(self, text: str) -> dict[str, torch.Tensor]:
        if text not in self._prompts:
            with torch.no_grad():
                self._prompts[text] = {k: v.detach() for k, v in self.backbone.encode_prompts([text]).items()}
            while len(self._prompts) > self._prompts_kept:
                self._prompts.popitem(last=False)
        self._prompts.move_to_end(text)
        return self._prompts[text]
