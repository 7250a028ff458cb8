"""The ``ram-dape`` prompter: the released models' RAM + DAPE tag prompts, made by the authors'
``ram`` code in a worker process. A stand-in ``ram`` package with the same entry points (built
by ``ram(pretrained=…, pretrained_condition=…, image_size=384, vit='swin_l')``, tags through
``inference_ram``, a tokenizer loader that fails as the released one does off the authors'
machine) tags by colour, so the preprocessing and the worker round trip are checked."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec
from dp2o_core.store import RunStore

FAKE_RAM = {
    "ram/__init__.py": "from .inference import inference_ram\n",
    "ram/inference.py": """
        import torch

        def inference_ram(image, model):
            with torch.no_grad():
                tags, tags_chinese = model.generate_tag(image)
            return tags
    """,
    "ram/models/__init__.py": "",
    "ram/models/utils.py": """
        def init_tokenizer():  # the released file loads from a folder on the authors' machine
            raise OSError("Can't load tokenizer for '/home/notebook/data/group/wry/bert-base-uncased'")
    """,
    "ram/models/ram_lora.py": """
        import torch
        from .utils import *

        COLOURS = ("red", "green", "blue")

        class FakeRam(torch.nn.Module):
            def __init__(self, weights, condition, image_size):
                super().__init__()
                self.tokenizer = init_tokenizer()
                self.scale = torch.nn.Parameter(weights["scale"])
                self.bias = torch.nn.Parameter(condition["bias"])
                self.image_size = image_size

            def generate_tag(self, image):
                assert image.shape[-2:] == (self.image_size, self.image_size), image.shape
                tags = []
                for row in image.mean(dim=(2, 3)) * self.scale + self.bias:
                    tags.append(", ".join(c for c, v in zip(COLOURS, row.tolist()) if v > 0) or "grey")
                return tags, tags

        def ram(pretrained="", pretrained_condition="", image_size=384, vit="swin_l"):
            assert vit == "swin_l"
            return FakeRam(torch.load(pretrained), torch.load(pretrained_condition), image_size)
    """,
}


@pytest.fixture
def ram_files(tmp_path):
    """The stand-in code folder, the two weight files and a local BERT tokenizer."""
    code = tmp_path / "DP2O-SR"
    for name, text in FAKE_RAM.items():
        (code / name).parent.mkdir(parents=True, exist_ok=True)
        (code / name).write_text(textwrap.dedent(text))
    torch.save({"scale": torch.ones(3)}, tmp_path / "ram_swin_large_14m.pth")
    torch.save({"bias": torch.zeros(3)}, tmp_path / "DAPE.pth")
    tokenizer = tmp_path / "bert-base-uncased"
    tokenizer.mkdir()
    (tokenizer / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "photo"]) + "\n"
    )
    options = (
        f"code={code},ram={tmp_path / 'ram_swin_large_14m.pth'},dape={tmp_path / 'DAPE.pth'},"
        f"tokenizer={tokenizer},python={sys.executable},device=cpu"
    )
    return tmp_path, options


def coloured(rgb, size=(24, 40)) -> np.ndarray:
    """An 8-bit LR image of one colour with some noise."""
    noise = np.random.default_rng(sum(rgb)).integers(-20, 21, (*size, 3))
    return np.clip(np.array(rgb)[None, None] + noise, 0, 255).astype(np.uint8)


def authors_tags(image: np.ndarray) -> str:
    """The authors' preprocessing (ToTensor, Resize to 384 × 384, ImageNet normalisation) and the
    stand-in model's rule, in this process."""
    from torchvision import transforms

    tensor = transforms.ToTensor()(Image.fromarray(image)).unsqueeze(0)
    normalised = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(
        transforms.Resize((384, 384))(tensor)
    )
    values = normalised.mean(dim=(2, 3))[0].tolist()
    return ", ".join(c for c, v in zip(("red", "green", "blue"), values, strict=True) if v > 0) or "grey"


def test_ram_dape_tags_each_lr_as_the_authors_script_does(ram_files):
    _, options = ram_files
    resolved = resolve_spec(PluginManager(), "prompter", f"ram-dape:{options}")
    checks = resolved.registration.cls.readiness(resolved.options)
    assert [c.status for c in checks] == ["present"] * 5, [(c.item, c.problem) for c in checks]
    prompter = resolved.build()
    images = [coloured((220, 40, 40)), coloured((30, 200, 220), size=(40, 24)), coloured((120, 120, 120))]
    expected = [authors_tags(image) for image in images]
    assert expected[0] == "red" and expected[1] == "green, blue"  # the stand-in does tell them apart
    assert prompter.prompts(images, [None, "a sidecar prompt", None]) == expected
    worker = prompter._worker
    assert prompter.prompts(images[:1], [None]) == expected[:1] and prompter._worker is worker  # kept


def test_prepare_stores_the_tags_and_a_broken_environment_stops_it_first(dp2o_cli, ram_files):
    tmp_path, options = ram_files
    for rgb, name in (((220, 40, 40), "red"), ((40, 40, 220), "blue")):
        Image.fromarray(np.kron(coloured(rgb, (16, 16)), np.ones((4, 4, 1), dtype=np.uint8))).save(
            tmp_path / f"{name}.png"
        )
    data = ("--data", f"hr:path={tmp_path},crop=64", "--degradation", "bicubic")
    run = tmp_path / "run"
    done = dp2o_cli("prepare", str(run), *data, "--prompter", f"ram-dape:{options}")
    assert done.exit_code == 0, done.stderr
    rows = RunStore(run).read_table("data", "groups", columns=["group_id", "prompt"]).to_pylist()
    assert {row["group_id"]: row["prompt"] for row in rows} == {"red": "red", "blue": "blue"}

    # the released code under transformers 5 fails at its first import: named before any work
    utils = tmp_path / "DP2O-SR" / "ram" / "models" / "ram_lora.py"
    utils.write_text(
        "from transformers.modeling_utils import apply_chunking_to_forward\n" + utils.read_text()
    )
    (tmp_path / "DAPE.pth").unlink()
    other = tmp_path / "other"
    refused = dp2o_cli("prepare", str(other), *data, "--prompter", f"ram-dape:{options}")
    shown = refused.stderr + refused.stdout
    assert refused.exit_code == 2
    assert "apply_chunking_to_forward" in shown and "python=" in shown  # the import error and the fix
    assert "DAPE.pth" in shown  # and the missing weights, in the same report
    assert not RunStore(other).done_groups("data")
