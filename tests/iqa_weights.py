"""Randomly initialised stand-ins for the files a pyiqa metric downloads, put where the real
ones would go, so that the real architecture is built and run offline.

For a metric: the torchvision backbone file (built randomly, saved under its real name in
torchvision's cache); pyiqa's own weight file and the timm backbone, captured while the
metric is built once with loading switched off, then saved — the pyiqa file into a weights
folder (``weights_dir``), the timm weights into a Hugging Face cache laid out like a real
download. The metric is then built again through dp2o's scorer, loading every file for real.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch


def install_random_weights(metric: str, weights_dir: Path, hub_cache: Path, torch_home: Path) -> None:
    """Write random stand-ins for every file ``metric`` downloads (see the module docstring)."""
    import pyiqa
    import timm.models._builder as timm_builder
    from dp2o_plugins.rewards.pyiqa_metric import pyiqa_configs
    from dp2o_plugins.rewards.readiness import BACKBONES

    for kind, name in BACKBONES.get(metric, []):
        if kind == "torchvision":
            import torchvision

            enum_name, member = name.split(".")
            weights = getattr(torchvision.models, enum_name)[member]
            builder = getattr(torchvision.models, enum_name.removesuffix("_Weights").lower())
            target = torch_home / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1]
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.save(builder().state_dict(), target)

    arch = pyiqa_configs()[metric]["metric_opts"]["type"]
    importlib.import_module("pyiqa.archs")._lazy_import_arch(arch)
    module = importlib.import_module(
        importlib.import_module("pyiqa.utils.registry").ARCH_REGISTRY.get(arch).__module__
    )
    pyiqa_files: list[tuple[torch.nn.Module, str, str | None]] = []
    timm_models: list[tuple[torch.nn.Module, str]] = []
    original_pyiqa, original_timm = module.load_pretrained_network, timm_builder.load_pretrained

    def capture_pyiqa(net, model_path, strict=True, weight_keys=None):
        pyiqa_files.append((net, model_path, weight_keys))

    def capture_timm(model, pretrained_cfg=None, *args, **kwargs):
        timm_models.append((model, _hub_id(pretrained_cfg)))

    module.load_pretrained_network, timm_builder.load_pretrained = capture_pyiqa, capture_timm
    try:
        pyiqa.create_metric(metric, device="cpu")
    finally:
        module.load_pretrained_network, timm_builder.load_pretrained = original_pyiqa, original_timm

    weights_dir.mkdir(parents=True, exist_ok=True)
    for net, url, key in pyiqa_files:
        state = {k: v.clone() for k, v in net.state_dict().items()}
        torch.save({key: state} if key else state, weights_dir / url.rsplit("/", 1)[-1])
    for model, source in timm_models:
        if source.startswith("https://"):  # a timm config of pyiqa's own with a download URL
            target = torch_home / "hub" / "checkpoints" / source.rsplit("/", 1)[-1]
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), target)
        else:
            _write_hub_model(hub_cache, source, model)


def _hub_id(pretrained_cfg) -> str:
    """Where timm would fetch the weights: the Hugging Face repository, else the URL."""
    get = (
        pretrained_cfg.get
        if isinstance(pretrained_cfg, dict)
        else lambda key: getattr(pretrained_cfg, key, None)
    )
    return str(get("hf_hub_id") or get("url"))


def _write_hub_model(hub_cache: Path, repo: str, model: torch.nn.Module) -> None:
    """A Hugging Face cache entry for ``repo`` holding ``model``'s weights as model.safetensors."""
    from safetensors.torch import save_file

    revision = "0" * 40
    folder = hub_cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text(json.dumps({"architecture": repo.split("/")[-1].split(".")[0]}))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(revision)


#: OpenAI CLIP shapes (the CLIP constructor's arguments) of the backbones the paper's metrics use.
CLIP_SHAPES = {
    "RN50": {"embed_dim": 1024, "vision_layers": (3, 4, 6, 3), "vision_width": 64, "vision_patch_size": None},
    "ViT-B/32": {"embed_dim": 512, "vision_layers": 12, "vision_width": 768, "vision_patch_size": 32},
}
CLIP_TEXT = {
    "image_resolution": 224,
    "context_length": 77,
    "vocab_size": 49408,
    "transformer_width": 512,
    "transformer_heads": 8,
    "transformer_layers": 12,
}


class _Holder(torch.nn.Module):
    """Carries a model's parameters into a TorchScript archive (the format OpenAI ships)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def random_clip(loader_module: str, name: str) -> torch.nn.Module:
    """A randomly initialised OpenAI CLIP of pyiqa's ``loader_module`` with ``name``'s shape."""
    module = importlib.import_module(loader_module)
    cls = getattr(module, "CLIP", None) or module.AFINECLIP  # A-FINE's loader has its own copy
    return cls(**CLIP_SHAPES[name], **CLIP_TEXT)


def install_random_clip(loader_module: str, name: str, folder: Path) -> Path:
    """A random CLIP saved as a TorchScript archive where pyiqa's ``loader_module`` keeps ``name``."""
    model = random_clip(loader_module, name)
    holder = _Holder()
    for child_name, child in model.named_children():
        holder.add_module(child_name, child)
    for param_name, parameter in model.named_parameters(recurse=False):
        holder.register_parameter(param_name, parameter)
    target = folder / importlib.import_module(loader_module)._MODELS[name].rsplit("/", 1)[-1]
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.trace(holder, torch.zeros(1)), str(target))
    return target


def local_clip_files(monkeypatch) -> None:
    """pyiqa's CLIP loaders check a file's SHA-256 against the real download's: let them take
    the stand-in that is in place (the download is what is substituted)."""
    for name in ("pyiqa.archs.clip_model", "pyiqa.archs.afineclip_model"):
        module = importlib.import_module(name)
        original = module._download

        def local(url, root, original=original):
            candidate = Path(root) / url.rsplit("/", 1)[-1]
            return str(candidate) if candidate.is_file() else original(url, root)

        monkeypatch.setattr(module, "_download", local)


def install_random_clipiqa_plus(weights_dir: Path, torch_home: Path) -> None:
    """CLIPIQA+: random CLIP RN50 and random learned prompts."""
    from pyiqa.archs.clipiqa_arch import CLIPIQA, default_model_urls

    install_random_clip("pyiqa.archs.clip_model", "RN50", torch_home / "hub" / "clip")
    net = CLIPIQA(model_type="clipiqa+", backbone="RN50", pretrained=False)
    weights_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        net.prompt_learner.ctx.data.clone(), weights_dir / default_model_urls["clipiqa+"].rsplit("/", 1)[-1]
    )


def install_random_afine(weights_dir: Path, home: Path) -> None:
    """A-FINE: random CLIP ViT-B/32 and a random afine.pth (fine-tuned CLIP and the heads)."""
    from pyiqa.archs import afine_arch

    install_random_clip("pyiqa.archs.afineclip_model", "ViT-B/32", home / ".cache" / "clip")
    clip = random_clip("pyiqa.archs.afineclip_model", "ViT-B/32")
    state = {
        "finetuned_clip": clip.state_dict(),
        "natural": afine_arch.AFINEQhead().state_dict(),
        "fidelity": afine_arch.AFINEDhead().state_dict(),
        "fidelity_scale": afine_arch.AFINENLM_FR_Fit_with_limit(
            yita1=2, yita2=-2, yita3=0.5, yita4=0.15, yita3_upper=0.95, yita3_lower=0.05, yita4_upper=0.70,
            yita4_lower=0.01,
        ).state_dict(),
        "natural_scale": afine_arch.AFINENLM_NR_Fit(
            yita1=2, yita2=-2, yita3=4.9592, yita4=21.5968
        ).state_dict(),
        "adapter": afine_arch.AFINELearnLambda(k=5).state_dict(),
    }  # fmt: skip
    weights_dir.mkdir(parents=True, exist_ok=True)
    torch.save(state, weights_dir / afine_arch.default_model_urls["afine"].rsplit("/", 1)[-1])


def install_tiny_qalign(hub_cache: Path) -> None:
    """A tiny ``q-future/one-align`` in the Hugging Face cache: pyiqa's own mPLUG-Owl2 classes with
    one layer of width 32 each, random, with a SentencePiece tokenizer and CLIP preprocessing."""
    import sentencepiece
    from pyiqa.archs.q_align import configuration_mplug_owl2 as configs
    from transformers import CLIPImageProcessor

    revision = "0" * 40
    folder = hub_cache / "models--q-future--one-align"
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    corpus = snapshot.parent / "corpus.txt"
    corpus.write_text(
        "USER: How would you rate the quality of this image? ASSISTANT: excellent good fair poor bad\n" * 40
    )
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(snapshot / "tokenizer"), vocab_size=64, model_type="bpe",
        bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2,
    )  # fmt: skip
    (snapshot / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(
        snapshot
    )
    layer = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    visual = {
        "visual_model": configs.MplugOwlVisionConfig(**layer, image_size=28, patch_size=14).to_dict(),
        "visual_abstractor": configs.MplugOwlVisualAbstractorConfig(
            **layer, num_learnable_queries=4, encoder_hidden_size=32, grid_size=2
        ).to_dict(),
    }
    config = configs.MPLUGOwl2Config(visual_config=visual, **layer, num_key_value_heads=2, vocab_size=64)
    from pyiqa.archs.q_align.modeling_mplug_owl2 import MPLUGOwl2LlamaForCausalLM

    MPLUGOwl2LlamaForCausalLM(config).save_pretrained(snapshot)


def install_tiny_vqr1_in_cache(hub_cache: Path) -> None:
    """A tiny random Qwen2.5-VL (:func:`tiny_vlms.save_tiny_qwen_vl`) as a download of
    ``TianheWu/VisualQuality-R1-7B`` in a Hugging Face cache."""
    from tiny_vlms import save_tiny_qwen_vl

    revision = "0" * 40
    folder = hub_cache / "models--TianheWu--VisualQuality-R1-7B"
    save_tiny_qwen_vl(folder / "snapshots" / revision)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
