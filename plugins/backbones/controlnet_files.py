"""What a ControlNet state dict is, told from its tensor names and shapes.

The DP²O-SR authors release their models as bare ControlNet state dicts (``model.safetensors``);
other files that look alike — an SD 1.5 ControlNet, a FLUX ControlNet with other blocks, a
LoRA adapter, a whole UNet — fail only deep inside ``load_state_dict`` with a list of hundreds
of keys. Here a file is described in one phrase ("a FLUX ControlNet with 5 double-stream and 0
single-stream blocks") and compared with what a backbone builds, from the safetensors header
in the preflight and from the loaded tensors at load time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

Shapes = Mapping[str, Sequence[int]]

#: Name fragments of LoRA adapter weights (peft's and kohya's).
LORA_MARKERS = ("lora_A", "lora_B", "lora_down", "lora_up", ".lora.")
#: The Stable Diffusion generation a ControlNet's cross-attention width belongs to.
SD_FAMILIES = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}


def is_sd_controlnet(shapes: Shapes) -> bool:
    """A diffusers ``ControlNetModel`` (UNet encoder + zero convolutions)."""
    return any(key.startswith("controlnet_cond_embedding.") for key in shapes)


def is_flux_controlnet(shapes: Shapes) -> bool:
    """A diffusers ``FluxControlNetModel``."""
    return any(key.startswith("controlnet_x_embedder.") for key in shapes)


def cross_attention_width(shapes: Shapes) -> int | None:
    """The text-embedding width a Stable Diffusion network attends to (768 SD 1.x, 1024 SD 2.x)."""
    for key, shape in shapes.items():
        if key.endswith("attn2.to_k.weight") and len(shape) == 2:
            return int(shape[1])
    return None


def flux_block_counts(shapes: Shapes) -> tuple[int, int]:
    """(double-stream, single-stream) transformer blocks of a FLUX network."""

    def count(prefix: str) -> int:
        pattern = re.compile(rf"^{prefix}\.(\d+)\.")
        return len({m.group(1) for key in shapes if (m := pattern.match(key))})

    return count("transformer_blocks"), count("single_transformer_blocks")


def describe_state_dict(shapes: Shapes) -> str:
    """One phrase saying what a state dict is."""
    keys = list(shapes)
    if not keys:
        return "an empty state dict"
    if any(marker in key for key in keys for marker in LORA_MARKERS):
        return "a LoRA adapter file (pass those as lora=…)"
    if is_sd_controlnet(shapes):
        width = cross_attention_width(shapes)
        family = SD_FAMILIES.get(width or 0)
        return f"a Stable Diffusion ControlNet with cross-attention width {width}" + (
            f" ({family})" if family else ""
        )
    if is_flux_controlnet(shapes):
        double, single = flux_block_counts(shapes)
        return f"a FLUX ControlNet with {double} double-stream and {single} single-stream blocks"
    if any(key.startswith(("control_model.", "input_hint_block.")) for key in keys):
        return "a ControlNet in the original (ldm) layout, not diffusers' (diffusers' scripts convert it)"
    if any(key.startswith("up_blocks.") for key in keys):
        return "a whole UNet, not a ControlNet"
    if any(key.startswith("single_transformer_blocks.") or key.startswith("proj_out.") for key in keys):
        return "a whole transformer, not a ControlNet"
    return f"not a diffusers ControlNet state dict ({len(keys)} tensors, e.g. {keys[0]})"


def fit_problem(expected: Shapes, found: Shapes) -> str | None:
    """How ``found`` differs from the state dict a model has (``expected``): counts of missing,
    unexpected and reshaped tensors with one example of each; None when it fits exactly."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    if not (missing or unexpected or reshaped):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if reshaped:
        key = reshaped[0]
        parts.append(
            f"{len(reshaped)} of another shape (e.g. {key}: {tuple(found[key])} in the file, "
            f"{tuple(expected[key])} in the model)"
        )
    return ", ".join(parts)
