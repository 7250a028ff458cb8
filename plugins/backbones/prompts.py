"""Prompt embeddings that backbones with text encoders share: a cache per prompt text (the
sample stage stores it in the run, so training and a resumed run never load the encoders
again) and the CLIP text encoder of Stable Diffusion-style models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class CachedPrompts:
    """Mixin: embeddings per prompt text, computed once by the backbone's ``_encode_prompt``.

    The backbone sets ``self._prompt_cache = {}``, ``self.device`` and ``self.dtype`` and has
    an option ``prompt`` (what an empty prompt means); ``_text`` holds its text encoders.
    """

    _prompt_cache: dict[str, dict[str, Any]]
    _text: Any = None
    device: Any
    dtype: Any
    options: Any

    def cached_prompt(self, text: str) -> dict[str, Any]:
        """Embeddings of one prompt text, computed on first use."""
        if text not in self._prompt_cache:
            self._prompt_cache[text] = self._encode_prompt(text)
        return self._prompt_cache[text]

    def _encode_prompt(self, text: str) -> dict[str, Any]:
        raise NotImplementedError

    def prompt_cache(self):
        """Every prompt embedded so far (text → embeddings)."""
        return dict(self._prompt_cache)

    def load_prompt_cache(self, cache) -> None:
        """Take embeddings computed earlier, moved to this backbone's device and dtype."""
        for text, tensors in cache.items():
            self._prompt_cache[text] = {k: v.to(self.device, self.dtype) for k, v in tensors.items()}

    def encode_prompts(self, prompts: Sequence[str]):
        """Prompt embeddings, concatenated over ``prompts`` (cached per distinct text); an
        empty prompt means the ``prompt`` option, as in sampling."""
        import torch

        cached = [self.cached_prompt(p or self.options.prompt) for p in prompts]
        return {key: torch.cat([c[key] for c in cached]) for key in cached[0]}

    def release_text_encoders(self) -> None:
        """Drop text encoders once every prompt is cached (training does not need them)."""
        self._text = None


class ClipPrompts(CachedPrompts):
    """Mixin: ``prompt_embeds`` from the model's ``tokenizer/`` and ``text_encoder/`` (CLIP, as
    Stable Diffusion's pipelines encode a prompt: padded to the tokenizer's length, last hidden
    state), loaded from the ``model`` option on first use."""

    def _encode_prompt(self, text: str) -> dict[str, Any]:
        import torch

        tokenizer, encoder = self._text_encoder()
        tokens = tokenizer(
            [text],
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            return {"prompt_embeds": encoder(tokens.input_ids.to(self.device))[0].to(self.dtype)}

    def _text_encoder(self):
        if self._text is None:
            from dp2o_plugins.backbones.loading import load_component
            from transformers import CLIPTextModel, CLIPTokenizer

            tokenizer = load_component(CLIPTokenizer, self.options.model, "tokenizer")
            encoder = load_component(CLIPTextModel, self.options.model, "text_encoder").to(self.device).eval()
            self._text = (tokenizer, encoder)
        return self._text
