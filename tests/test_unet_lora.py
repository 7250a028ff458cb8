"""LoRA on the UNet of the pipeline-folder backbones (sd-upscaler, ldm-sr): training moves only
the adapters, the reference is the UNet without them, the saved adapters sample as trained."""

from __future__ import annotations

import pytest
import torch
from dpo_step import one_dpo_step
from tiny_models import save_tiny_ldm_sr, save_tiny_upscaler

from dp2o_core.errors import Dp2oError
from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec

MAKERS = {"sd-upscaler": save_tiny_upscaler, "ldm-sr": save_tiny_ldm_sr}


@pytest.fixture(scope="module", params=sorted(MAKERS))
def model_folder(request, tmp_path_factory):
    return request.param, MAKERS[request.param](tmp_path_factory.mktemp(request.param))


def build(name, folder, extra: str = ""):
    spec = f"{name}:model={folder},steps=2,device=cpu{extra}"
    return resolve_spec(PluginManager(), "backbone", spec).build()


def test_lora_trains_only_adapters_and_the_saved_file_samples_as_trained(model_folder, tmp_path):
    name, folder = model_folder
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    model = build(name, folder, ",trainable=lora-unet,lora_rank=4")
    base = {k: v.clone() for k, v in model.unet.state_dict().items()}
    images = model.sample(lr, [[1, 2]]).images[0]
    model.prepare_training()
    trained = dict(model.unet.named_parameters())
    assert all("lora_" in n for n, p in trained.items() if p.requires_grad)
    assert any(p.requires_grad for p in trained.values())
    x0 = model.encode(images).detach()
    prompts = model.encode_prompts([""]) if name == "sd-upscaler" else {}  # ldm-sr reads no text
    condition = {**model.encode_condition(lr), **prompts}
    before, _ = one_dpo_step(model, x0, condition)
    # adapters start at zero (B = 0): the policy was the reference until the step
    assert torch.equal(before.policy_winner, before.reference_winner)
    assert all(torch.equal(base[k], v) for k, v in model.unet.state_dict().items() if k in base)

    model.unet.eval()
    model.save(tmp_path / "tuned")
    assert [p.name for p in (tmp_path / "tuned").iterdir()] == ["lora.safetensors"]
    options = model.tuned_options(tmp_path / "tuned")
    assert options == {"lora": str(tmp_path / "tuned" / "lora.safetensors"), "trainable": "lora-unet"}
    extra = "".join(f",{k}={v}" for k, v in options.items())
    with torch.no_grad():
        ours = model.sample(lr, [[9]]).images[0, 0]
    loaded = build(name, folder, extra).sample(lr, [[9]]).images[0, 0]
    untuned = build(name, folder).sample(lr, [[9]]).images[0, 0]
    assert (loaded - ours).abs().max() < 1e-5  # rank read from the file (4, not the default 16)
    assert (untuned - ours).abs().max() > 1e-4


def test_a_lora_file_without_lora_training_or_for_another_model_is_refused(model_folder, tmp_path):
    name, folder = model_folder
    model = build(name, folder, ",trainable=lora-unet,lora_rank=2")
    model.prepare_training()
    model.save(tmp_path / "mine")
    with pytest.raises(Dp2oError, match="needs trainable=lora-unet"):
        build(name, folder, f",lora={tmp_path / 'mine' / 'lora.safetensors'}")
    other = "ldm-sr" if name == "sd-upscaler" else "sd-upscaler"
    other_model = build(other, MAKERS[other](tmp_path / "other"), ",trainable=lora-unet,lora_rank=2")
    other_model.prepare_training()
    other_model.save(tmp_path / "theirs")
    with pytest.raises(Dp2oError, match="does not fit this model"):
        build(name, folder, f",trainable=lora-unet,lora={tmp_path / 'theirs' / 'lora.safetensors'}")
