"""LoRA adapters on any backbone network (a ControlNet, a UNet with or without text, a FLUX
transformer): attached to the attention projections, trained in float32, switched off to
give the DPO reference without a copy, and saved and loaded as peft state dicts
(``lora.safetensors``: keys without the adapter name, as peft and diffusers write them).

diffusers' own ``add_adapter`` exists only on the models that mix in its peft support
(``UNet2DConditionModel`` has it, ``UNet2DModel`` does not); peft's ``inject_adapter_in_model``
works on every ``torch.nn.Module``, so it is used where the model has no ``add_adapter``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dp2o_core.errors import Dp2oError

#: Modules adapted: the query, key, value and output projections of diffusers' attention.
ATTENTION_PROJECTIONS = ["to_k", "to_q", "to_v", "to_out.0"]

#: What adapted parameters are called (peft's LoRA layers).
LORA_MARK = "lora_"


def attach_lora(module: Any, rank: int) -> None:
    """LoRA adapters of ``rank`` (α = rank, Gaussian initialisation: B is zero, so the adapted
    network starts as the network) on ``module``'s attention projections; once."""
    from peft import LoraConfig, inject_adapter_in_model

    if getattr(module, "peft_config", None):
        return
    config = LoraConfig(
        r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=ATTENTION_PROJECTIONS
    )
    if hasattr(module, "add_adapter"):
        module.add_adapter(config)
    else:
        inject_adapter_in_model(config, module)
        module.peft_config = {"default": config}  # what peft's state-dict functions read


def train_only_lora(module: Any) -> None:
    """Only the adapters of ``module`` train, in float32 whatever the network's dtype."""
    for name, parameter in module.named_parameters():
        if LORA_MARK in name:
            parameter.data = parameter.data.float()
        parameter.requires_grad_(LORA_MARK in name)
    module.train()


@contextlib.contextmanager
def lora_off(module: Any) -> Iterator[None]:
    """``module`` as it was before adapters were attached (the DPO reference), for the block."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in module.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def lora_weights(module: Any) -> dict[str, Any]:
    """The adapters' weights of ``module`` as a peft state dict, on the CPU, ready to save."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(module)
    return {key: value.detach().contiguous().cpu() for key, value in state.items()}


def save_lora(module: Any, file: Path) -> None:
    """``lora.safetensors``: the adapters of ``module``."""
    from safetensors.torch import save_file

    save_file(lora_weights(module), str(file))


def load_lora(module: Any, file: str | Path, rank: int) -> None:
    """Attach adapters to ``module`` and load their weights from ``file``: of the file's rank
    (``rank`` where the file does not tell one). A file made for another network (keys it has
    no adapter for, or of other shapes) is refused, naming a key."""
    from dp2o_plugins.backbones.loading import load_state_dict_file
    from peft.utils import set_peft_model_state_dict

    state = load_state_dict_file(Path(file))
    ranks = {value.shape[0] for key, value in state.items() if "lora_A" in key}
    attach_lora(module, ranks.pop() if len(ranks) == 1 else rank)
    try:
        result = set_peft_model_state_dict(module, state)
    except RuntimeError as error:  # an adapter of the same name and another shape
        first = str(error).strip().splitlines()[-1].strip()
        raise Dp2oError(f"{file} does not fit this model's adapters ({first})") from None
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise Dp2oError(f"{file} does not fit this model's adapters (e.g. {unexpected[0]})")
