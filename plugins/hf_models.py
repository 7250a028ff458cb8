"""Hugging Face transformers models that built-ins run in dp2o's process (VQ-R1, captioners):
their preflight check and their loading, with one message for a model that is not there."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dp2o_core.errors import Dp2oError

#: What a Hugging Face model id looks like (``name`` or ``owner/name``); anything else is a path.
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


def model_source_check(who: str, source: str, option: str = "model") -> Any:
    """A model named by ``option``: a local folder holding its ``config.json``, or a hub id
    (found in the cache, or downloadable unless offline)."""
    from dp2o_plugins.network import cached_or_hub_check

    from dp2o_core.preflight import Check

    path = Path(source).expanduser()
    if not path.exists():
        if _HUB_ID.fullmatch(source) and not source.startswith("."):
            return cached_or_hub_check(who, source, ("config.json",), local=option)
        return Check(
            who, f"model folder {path}", "missing", problem="does not exist",
            fix=f"check the {option} option (a local folder, or a Hugging Face id such as owner/name)",
        )  # fmt: skip
    if (path / "config.json").is_file():
        return Check(who, f"model folder {path}", "present")
    return Check(
        who, f"model folder {path}", "missing", problem="has no config.json", fix=f"check the {option} option"
    )


def load_processor_and_model(
    who: str, source: str, model_class: Any, dtype: str, device: str, option: str = "model"
) -> tuple:
    """``AutoProcessor`` and ``model_class`` from ``source`` (a folder or a hub id) in ``dtype`` on
    ``device`` (``auto``: the process's GPU, else the CPU), ready to generate for a batch: the
    tokenizer pads on the left, where decoder-only models do not continue. A model that cannot be
    loaded is named with the download command and the option."""
    import torch
    from dp2o_plugins.backbones.loading import quiet_libraries
    from dp2o_plugins.rewards.pyiqa_metric import resolve_device
    from transformers import AutoProcessor

    quiet_libraries()
    path = Path(source).expanduser()
    where = str(path) if path.exists() else source
    try:
        processor = AutoProcessor.from_pretrained(where)
        model = model_class.from_pretrained(where, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise Dp2oError(
            f"{who}: cannot load the model {where!r} ({first}); download it (`hf download {source}`) "
            f"or pass {option}=/path/to/its/folder"
        ) from None
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.padding_side = "left"
    return processor, model.eval().to(resolve_device(device))
