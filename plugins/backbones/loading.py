"""Loading diffusers components from a hub id or a local folder, with errors a person can act on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dp2o_core.errors import Dp2oError


def local_only() -> bool:
    """True when the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0")


def resolve_device(option: str) -> Any:
    """The torch device of a backbone's ``device`` option: 'auto' is the GPU of this process's
    local rank (accelerate/torchrun give each process its own), else the CPU."""
    import torch

    if option != "auto":
        return torch.device(option)
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    return torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")


def quiet_libraries() -> None:
    """Keep diffusers' and transformers' loading chatter and progress bars off dp2o's output."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_component(cls: Any, source: str, subfolder: str | None = None, **kwargs: Any) -> Any:
    """``cls.from_pretrained(source, subfolder=…)``; a missing model names itself and the fix."""
    quiet_libraries()
    path = Path(source).expanduser()
    is_local = path.exists()
    where = str(path if is_local else source)
    try:
        return cls.from_pretrained(
            where, subfolder=subfolder, local_files_only=local_only() or is_local, **kwargs
        )
    except (OSError, ValueError) as error:
        part = f"{subfolder}/ of " if subfolder else ""
        if is_local:
            raise Dp2oError(f"cannot load {part}{path} as {cls.__name__}: {_first_line(error)}") from None
        raise Dp2oError(
            f"cannot load {part}model {source!r}: it is not in the local Hugging Face cache and could not be "
            f"downloaded ({_first_line(error)}). On a machine without internet, download it elsewhere "
            f"(`huggingface-cli download {source}`) and either pass the folder instead of the id "
            f"(e.g. model=/models/{source.split('/')[-1]}), or copy the cache to $HF_HOME and set "
            "HF_HUB_OFFLINE=1."
        ) from None


def load_state_dict_file(path: Path) -> dict:
    """A state dict from ``.safetensors`` (or a ``.bin``/``.pt`` loaded with weights_only=True)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise Dp2oError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}"
