"""``caption``: each LR image's prompt written by a Hugging Face image-to-text model in dp2o's process.

Any model transformers loads with ``AutoModelForImageTextToText`` and ``AutoProcessor``: a
captioner (BLIP, GIT, Florence-2, a vision encoder-decoder) or a chat vision-language model
(Qwen2.5-VL, SmolVLM, LLaVA…). A model whose processor has a chat template is asked
``question`` in one user turn after the image; a captioner gets ``question`` as the text its
caption starts from (BLIP's "a photography of"), or no text. Decoding is greedy, so the same
image always gets the same prompt. Where the model repeats its input before the answer (the
chat models), only the answer is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from dp2o_core import PluginOptions, Prompter, runtime_option

#: What a chat model is asked when ``question`` is empty.
DEFAULT_QUESTION = "List the objects and materials visible in this photo as short comma-separated tags."


class CaptionOptions(PluginOptions):
    """The captioning model and what it is asked."""

    model: str = Field(..., description="A Hugging Face image-to-text model: hub id or local folder.")
    question: str = Field(
        "",
        description="A chat model's question (empty: ask for comma-separated tags); a captioner's "
        "caption start (empty: none).",
    )
    max_new_tokens: int = Field(40, ge=1, description="Longest prompt, in tokens.")
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="Weights' precision.")
    device: str = runtime_option("auto", description="Torch device ('auto' picks cuda when available).")
    batch_size: int = runtime_option(8, ge=1, description="Images per generate call.")


class CaptionPrompter(Prompter):
    """The text a Hugging Face image-to-text model writes for each LR image (greedy decoding)."""

    name = "caption"
    Options = CaptionOptions

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self._model: Any = None
        self._processor: Any = None

    @classmethod
    def readiness(cls, options: Any) -> list:
        """The model: a local folder with its config, or the hub id (cached or downloadable)."""
        from dp2o_plugins.hf_models import model_source_check

        return [model_source_check(f"prompter {cls.name}", options.model)]

    def prompts(self, lr: Sequence, given: Sequence[str | None]) -> list[str]:
        """The model's text for each LR image, ``batch_size`` at a time."""
        self._load()
        size = self.options.batch_size
        texts: list[str] = []
        for start in range(0, len(lr), size):
            texts += self._captions(lr[start : start + size])
        return texts

    def _load(self) -> None:
        if self._model is not None:
            return
        from dp2o_plugins.hf_models import load_processor_and_model
        from transformers import AutoModelForImageTextToText

        o = self.options
        self._processor, self._model = load_processor_and_model(
            f"prompter {self.name}", o.model, AutoModelForImageTextToText, o.dtype, o.device
        )

    def _captions(self, arrays: Sequence) -> list[str]:
        import torch
        from PIL import Image

        images = [Image.fromarray(array) for array in arrays]
        inputs = self._processor(images=images, **self._text(len(images)), padding=True, return_tensors="pt")
        inputs = inputs.to(self._model.device)
        with torch.inference_mode():
            output = self._model.generate(
                **inputs, do_sample=False, max_new_tokens=self.options.max_new_tokens
            )
        given = inputs.get("input_ids")
        if (
            given is not None
            and output.shape[1] >= given.shape[1]
            and torch.equal(output[:, : given.shape[1]], given)
        ):
            output = output[:, given.shape[1] :]  # a model that repeats its input: the answer only
        texts = self._processor.batch_decode(output, skip_special_tokens=True)
        return [" ".join(text.split()) for text in texts]

    def _text(self, count: int) -> dict[str, Any]:
        """The processor's text argument: the chat turn, the caption start, or nothing."""
        question = self.options.question
        if getattr(self._processor, "chat_template", None):
            turn = [{"type": "image"}, {"type": "text", "text": question or DEFAULT_QUESTION}]
            text = self._processor.apply_chat_template(
                [{"role": "user", "content": turn}], tokenize=False, add_generation_prompt=True
            )
            return {"text": [text] * count}
        return {"text": [question] * count} if question else {}
