"""ControlNet state-dict files — the released DP²O-SR models' format — load when they fit the
backbone, and anything else is refused before sampling with one line saying what it is."""

from __future__ import annotations

import json

import pytest
import torch
from images import write_photos
from safetensors.torch import save_file
from tiny_models import save_tiny_flux

from dp2o_core.errors import Dp2oError
from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory):
    return save_tiny_flux(tmp_path_factory.mktemp("flux"))


def sd_controlnet_file(folder, path, **unet_changes):
    """A ControlNet state dict in the released layout (``from_unet`` then ``state_dict``)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    if unet_changes:
        unet = UNet2DConditionModel.from_config({**unet.config, **unet_changes})
    save_file({k: v.contiguous() for k, v in ControlNetModel.from_unet(unet).state_dict().items()}, path)
    return path


def flux_controlnet_file(folder, path, layers, single_layers):
    from diffusers import FluxControlNetModel, FluxTransformer2DModel

    transformer = FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer")
    config = transformer.config
    controlnet = FluxControlNetModel.from_transformer(
        transformer,
        num_layers=layers,
        num_single_layers=single_layers,
        attention_head_dim=config.attention_head_dim,
        num_attention_heads=config.num_attention_heads,
    )
    save_file({k: v.contiguous() for k, v in controlnet.state_dict().items()}, path)
    return path


def check(dp2o_cli, tmp_path, spec):
    result = dp2o_cli("check", "--backbone", spec, "--reward", "hybrid-offline", "--run", str(tmp_path / "r"))
    record = dp2o_cli(
        "check", "--backbone", spec, "--reward", "hybrid-offline", "--run", str(tmp_path / "r"), "--json"
    )
    checks = [c for c in json.loads(record.stdout)["checks"] if c["component"].startswith("backbone")]
    return result, checks


def test_a_released_style_sd2_controlnet_is_ready_and_others_are_named(dp2o_cli, tiny_sd, tmp_path):
    released = sd_controlnet_file(tiny_sd, tmp_path / "model.safetensors")
    _, checks = check(dp2o_cli, tmp_path, f"sd2:model={tiny_sd},controlnet={released}")
    assert {c["status"] for c in checks} == {"present"}

    sd15 = sd_controlnet_file(tiny_sd, tmp_path / "sd15.safetensors", cross_attention_dim=48)
    result, checks = check(dp2o_cli, tmp_path, f"sd2:model={tiny_sd},controlnet={sd15}")
    assert result.exit_code == 1
    (bad,) = [c for c in checks if c["status"] == "missing"]
    assert "cross-attention width 48" in bad["problem"] and "text embeddings of width 32" in bad["problem"]

    lora = tmp_path / "lora.safetensors"
    save_file({"down_blocks.0.attentions.0.to_q.lora_A.weight": torch.zeros(4, 32)}, lora)
    _, checks = check(dp2o_cli, tmp_path, f"sd2:model={tiny_sd},controlnet={lora}")
    assert any("a LoRA adapter file" in c["problem"] for c in checks)

    flux = flux_controlnet_file(save_tiny_flux(tmp_path / "f"), tmp_path / "flux.safetensors", 4, 0)
    _, checks = check(dp2o_cli, tmp_path, f"sd2:model={tiny_sd},controlnet={flux}")
    described = "is a FLUX ControlNet with 4 double-stream and 0 single-stream blocks"
    assert any(described in c["problem"] for c in checks)


def test_no_controlnet_is_refused_unless_new_is_asked_for(dp2o_cli, tiny_sd, tmp_path):
    photos_folder = tmp_path / "imgs"
    write_photos(photos_folder, ("astronaut",), size=64)
    result, checks = check(dp2o_cli, tmp_path, f"sd2:model={tiny_sd}")
    assert result.exit_code == 1
    (missing,) = [c for c in checks if c["status"] == "missing"]
    assert "ignores the LR image" in missing["problem"] and "controlnet=new" in missing["fix"]
    sampled = dp2o_cli(
        "sample", str(tmp_path / "run"), "--data", f"hr:path={photos_folder},crop=64",
        "--backbone", f"sd2:model={tiny_sd},steps=1,device=cpu,geometry=exact", "-m", "2",
    )  # fmt: skip
    assert sampled.exit_code == 2 and "ignores the LR image" in sampled.stderr
    assert not (tmp_path / "run").exists()
    spec = f"sd2:model={tiny_sd},steps=1,device=cpu,geometry=exact"
    image, output = photos_folder / "astronaut.png", tmp_path / "x4.png"
    upscaled = dp2o_cli("upscale", str(image), str(output), "--backbone", spec)
    assert upscaled.exit_code == 2 and "ignores the LR image" in upscaled.stderr
    assert not output.exists()
    _, checks = check(dp2o_cli, tmp_path, f"sd2:model={tiny_sd},controlnet=new")
    assert {c["status"] for c in checks} == {"present"}


def test_a_file_that_does_not_fit_fails_to_load_with_what_it_is(tiny_sd, tmp_path):
    sd15 = sd_controlnet_file(tiny_sd, tmp_path / "sd15.safetensors", cross_attention_dim=48)
    spec = f"sd2:model={tiny_sd},device=cpu,geometry=exact,controlnet={sd15}"
    with pytest.raises(Dp2oError) as error:
        resolve_spec(PluginManager(), "backbone", spec).build()
    message = str(error.value)
    assert "is a Stable Diffusion ControlNet with cross-attention width 48" in message
    assert "not the ControlNet sd2-controlnet builds" in message and "of another shape" in message


def test_flux_controlnet_blocks_come_from_the_options(dp2o_cli, tiny_flux, tmp_path):
    five = flux_controlnet_file(tiny_flux, tmp_path / "five.safetensors", 5, 0)
    result, checks = check(dp2o_cli, tmp_path, f"flux:model={tiny_flux},controlnet={five}")
    assert result.exit_code == 1
    (bad,) = [c for c in checks if c["status"] == "missing"]
    assert "5 double-stream and 0 single-stream blocks" in bad["problem"]
    assert "controlnet_layers=5,controlnet_single_layers=0" in bad["problem"]
    spec = f"flux:model={tiny_flux},controlnet={five},controlnet_layers=5"
    _, checks = check(dp2o_cli, tmp_path, spec)
    assert {c["status"] for c in checks} == {"present"}
    backbone = resolve_spec(PluginManager(), "backbone", f"{spec},device=cpu").build()
    assert len(backbone.controlnet.transformer_blocks) == 5


def test_describe_state_dict_names_common_files():
    from dp2o_plugins.backbones.controlnet_files import describe_state_dict

    assert "original (ldm) layout" in describe_state_dict({"control_model.input_blocks.0.0.weight": (1,)})
    assert describe_state_dict({"up_blocks.0.resnets.0.conv1.weight": (1,)}).startswith("a whole UNet")
    sd21 = {"controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3), "x.attn2.to_k.weight": (320, 1024)}
    assert describe_state_dict(sd21).endswith("width 1024 (SD 2.x)")
    assert describe_state_dict({}) == "an empty state dict"


def test_a_controlnet_hub_id_is_looked_up_not_refused_as_a_missing_file(monkeypatch, tmp_path):
    from dp2o_plugins.backbones.sd2_controlnet import Sd2ControlNetBackbone

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    options = Sd2ControlNetBackbone.Options(model=str(tmp_path), controlnet="someone/sr-controlnet")
    (check,) = Sd2ControlNetBackbone._controlnet_checks("backbone sd2", options)
    assert check.status == "missing" and "someone/sr-controlnet" in check.item
    assert "not in the Hugging Face cache" in check.problem
    assert "hf download someone/sr-controlnet" in check.fix
    # a path that is not there is still a missing file
    options = Sd2ControlNetBackbone.Options(model=str(tmp_path), controlnet=str(tmp_path / "cn.safetensors"))
    (check,) = Sd2ControlNetBackbone._controlnet_checks("backbone sd2", options)
    assert check.problem == "does not exist"
