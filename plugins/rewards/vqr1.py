"""VisualQuality-R1 (VQ-R1): a reasoning no-reference IQA model, scored as its authors score.

VQ-R1 (``TianheWu/VisualQuality-R1-7B``) is Qwen2.5-VL-7B tuned by reinforcement learning to
rank; it answers a rating question in text and the score is the number in its answer. It is
one of the paper's untrained no-reference evaluation metrics and not part of pyiqa, so dp2o
runs it through transformers in its own process. What its authors' inference code does, and
what this module does the same way:

* each image is resized (Pillow's bicubic) so both sides are multiples of 28 — the nearest
  ones, the area kept within [4, 16384] × 28² pixels (:func:`qwen_size`);
* one user turn: the image, then their rating question followed by the instruction to think
  in ``<think>`` tags and answer with one score in ``<answer>`` tags (``thinking=false``: their
  "fast" instruction, answer only), through the model's chat template with the generation
  prompt and the vision id; left padding for batches;
* sampled generation, ``top_k`` 50, ``top_p`` 1, over the model's own generation settings;
* the score is the first number in the last ``<answer>`` element (in the whole reply when
  there is none).

Two things differ on purpose: generation is seeded (``seed``; the same candidates give the
same scores), and a reply without a number is sampled again (``attempts``) — their code puts a
random integer in its place, which dp2o does not; after the last attempt the candidate is
named with the reply. Higher is better (1 to 5).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any, Literal

from pydantic import Field

from dp2o_core import MetricInfo, PluginOptions, RewardModel, runtime_option
from dp2o_core.errors import Dp2oError

#: Their rating question (a fact of the model's training: the model answers this text).
QUESTION = (
    "You are doing the image quality assessment task. Here is the question: What is your overall rating on "
    "the quality of this picture? The rating should be a float between 1 and 5, rounded to two decimal "
    "places, with 1 representing very poor quality and 5 representing excellent quality."
)
#: The instruction after the question: with the reasoning (their default), or the answer alone.
INSTRUCTIONS = {
    True: "First output the thinking process in <think> </think> tags and then output the final answer "
    "with only one score in <answer> </answer> tags.",
    False: "Output the final answer with only one score in <answer> </answer> tags.",
}
#: Qwen2.5-VL's image grid: sides are multiples of 28 pixels (14-px patches merged 2 × 2) and
#: the area stays within these bounds (their preprocessing's defaults).
PATCH_GRID = 28
MIN_PIXELS = 4 * PATCH_GRID**2
MAX_PIXELS = 16384 * PATCH_GRID**2
DEFAULT_MODEL = "TianheWu/VisualQuality-R1-7B"

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUMBER = re.compile(r"\d+(\.\d+)?")


def qwen_size(height: int, width: int) -> tuple[int, int]:
    """The (height, width) an image of ``height`` × ``width`` is resized to: each side to the
    nearest multiple of 28 (at least 28); an area above :data:`MAX_PIXELS` or below
    :data:`MIN_PIXELS` is scaled into the range first, keeping the aspect ratio."""
    h = max(PATCH_GRID, round(height / PATCH_GRID) * PATCH_GRID)
    w = max(PATCH_GRID, round(width / PATCH_GRID) * PATCH_GRID)
    if h * w > MAX_PIXELS:
        shrink = math.sqrt(height * width / MAX_PIXELS)
        h = max(PATCH_GRID, math.floor(height / shrink / PATCH_GRID) * PATCH_GRID)
        w = max(PATCH_GRID, math.floor(width / shrink / PATCH_GRID) * PATCH_GRID)
    elif h * w < MIN_PIXELS:
        grow = math.sqrt(MIN_PIXELS / (height * width))
        h = math.ceil(height * grow / PATCH_GRID) * PATCH_GRID
        w = math.ceil(width * grow / PATCH_GRID) * PATCH_GRID
    return h, w


def answer_score(reply: str) -> float | None:
    """The score in a reply: the first number of its last ``<answer>`` element (of the whole
    reply without one); None when there is no number."""
    answers = _ANSWER.findall(reply)
    text = answers[-1].strip() if answers else reply.strip()
    number = _NUMBER.search(text)
    return float(number.group()) if number else None


class VisualQualityR1Options(PluginOptions):
    """Options of the VQ-R1 metric."""

    model: str = Field(DEFAULT_MODEL, description="The model: a Hugging Face id or a local folder.")
    thinking: bool = Field(
        True,
        description="Ask for the reasoning before the answer (the authors' default); false: their fast "
        "prompt, the answer only.",
    )
    max_new_tokens: int = Field(
        2048, ge=1, description="Longest reply (the authors': 2048 with reasoning for one image)."
    )
    seed: int = Field(0, description="Seed of the sampled replies (the same images give the same scores).")
    attempts: int = Field(
        3, ge=1, description="Replies sampled for an image before one without a score fails."
    )
    dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="Weights' precision (the authors': bfloat16)."
    )
    device: str = runtime_option("auto", description="Torch device ('auto' picks cuda when available).")
    batch_size: int = runtime_option(8, ge=1, description="Images per generate call.")


class VisualQualityR1(RewardModel):
    """VisualQuality-R1's rating (1–5, higher is better) as a no-reference metric ``vqr1``."""

    name = "vqr1"
    Options = VisualQualityR1Options

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self._model: Any = None
        self._processor: Any = None

    @classmethod
    def readiness(cls, options: Any) -> list:
        """The model's files: a local folder with its config, or the hub id (cached, or
        downloadable unless offline)."""
        from dp2o_plugins.hf_models import model_source_check

        return [model_source_check(f"reward {cls.name}", options.model)]

    def metrics(self) -> Sequence[MetricInfo]:
        o = self.options
        version = f"{o.model} thinking={o.thinking} transformers {metadata.version('transformers')}"
        return [MetricInfo(self.name, mode="NR", lower_better=False, version=version, min_size=PATCH_GRID)]

    def prepare(self) -> None:
        """Load the model and its processor (once)."""
        if self._model is not None:
            return
        from dp2o_plugins.hf_models import load_processor_and_model
        from transformers import Qwen2_5_VLForConditionalGeneration

        o = self.options
        self._processor, self._model = load_processor_and_model(
            f"reward {self.name}", o.model, Qwen2_5_VLForConditionalGeneration, o.dtype, o.device
        )

    def score(self, candidates, reference=None) -> Mapping[str, Sequence[float]]:
        """The model's rating of each candidate (N×3×H×W in [0, 1])."""
        self.prepare()
        images = _pil_images(candidates)
        scores: list[float] = []
        size = self.options.batch_size
        for start in range(0, len(images), size):
            scores += self._rate(images[start : start + size], first_index=start)
        return {self.name: scores}

    def reward(self, scores: Mapping[str, Sequence[float]]) -> Sequence[float]:
        return list(scores[self.name])

    # -- generation -----------------------------------------------------------------------------
    def _rate(self, images: list, first_index: int) -> list[float]:
        """Scores of one batch; the images without a number in their reply are asked again."""
        scores: list[float | None] = [None] * len(images)
        replies = [""] * len(images)
        for attempt in range(self.options.attempts):
            pending = [i for i, score in enumerate(scores) if score is None]
            if not pending:
                break
            answered = self._replies([images[i] for i in pending], seed=self.options.seed + attempt)
            for i, reply in zip(pending, answered, strict=True):
                replies[i], scores[i] = reply, answer_score(reply)
        missing = [i for i, score in enumerate(scores) if score is None]
        if missing:
            i = missing[0]
            raise Dp2oError(
                f"reward vqr1: candidate {first_index + i} got no score in {self.options.attempts} replies; "
                f"the last one: {replies[i][:300]!r}"
            )
        return [float(score) for score in scores if score is not None]

    def _replies(self, images: list, seed: int) -> list[str]:
        """The model's reply to the rating question for each image, sampled from ``seed``."""
        import torch

        instruction = f"{QUESTION} {INSTRUCTIONS[self.options.thinking]}"
        message = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
        text = self._processor.apply_chat_template(
            message, tokenize=False, add_generation_prompt=True, add_vision_id=True
        )
        inputs = self._processor(text=[text] * len(images), images=images, padding=True, return_tensors="pt")
        inputs = inputs.to(self._model.device)
        devices = [self._model.device] if self._model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            generated = self._model.generate(
                **inputs,
                use_cache=True,
                max_new_tokens=self.options.max_new_tokens,
                do_sample=True,
                top_k=50,
                top_p=1.0,
            )
        new_tokens = generated[:, inputs["input_ids"].shape[1] :]
        return self._processor.batch_decode(
            new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )


def _pil_images(candidates) -> list:
    """Each candidate as an 8-bit RGB Pillow image (as its PNG file holds it) on Qwen2.5-VL's
    grid (:func:`qwen_size`)."""
    from PIL import Image

    from dp2o_core.imageio import tensor_to_array

    images = []
    for candidate in candidates:
        image = Image.fromarray(tensor_to_array(candidate))
        height, width = qwen_size(image.height, image.width)
        images.append(image.resize((width, height), Image.Resampling.BICUBIC))
    return images
