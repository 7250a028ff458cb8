"""The ``caption`` prompter: a Hugging Face image-to-text model writes each LR image's prompt in
dp2o's process — a chat vision-language model (tiny random Qwen2.5-VL) and a captioner (tiny
random BLIP), each compared with the model called directly, and through ``dp2o prepare``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_vlms import save_tiny_blip, save_tiny_qwen_vl

from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec
from dp2o_core.store import RunStore


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("captioners")
    save_tiny_qwen_vl(folder / "qwen")
    save_tiny_blip(folder / "blip")
    return folder


def lr_images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),
        rng.integers(0, 256, (40, 28, 3), dtype=np.uint8),
    ]


def prompter(spec: str):
    return resolve_spec(PluginManager(), "prompter", spec).build()


def direct_generate(folder, images, text, tokens: int) -> list[str]:
    """The model called as its model card shows: processor, greedy generate, decode."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    kwargs = {"text": [text] * len(images)} if text else {}
    inputs = processor(images=images, padding=True, return_tensors="pt", **kwargs)
    output = model.generate(**inputs, do_sample=False, max_new_tokens=tokens)
    return output, inputs, processor


def test_a_chat_model_answers_the_question_and_only_its_answer_is_the_prompt(models):
    from dp2o_plugins.prompters.caption import DEFAULT_QUESTION

    images = lr_images()
    ours = prompter(f"caption:model={models / 'qwen'},max_new_tokens=12,device=cpu").prompts(
        images, [None, None]
    )
    from transformers import AutoProcessor

    turn = [{"type": "image"}, {"type": "text", "text": DEFAULT_QUESTION}]
    chat = AutoProcessor.from_pretrained(models / "qwen").apply_chat_template(
        [{"role": "user", "content": turn}], tokenize=False, add_generation_prompt=True
    )
    output, inputs, processor = direct_generate(
        models / "qwen", [Image.fromarray(a) for a in images], chat, 12
    )
    answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert ours == [" ".join(answer.split()) for answer in answers]
    assert all(DEFAULT_QUESTION not in text and "assistant" not in text for text in ours)
    again = prompter(f"caption:model={models / 'qwen'},max_new_tokens=12,device=cpu").prompts(
        images, [None] * 2
    )
    assert again == ours  # greedy: the same image, the same prompt


def test_a_captioner_continues_its_caption_start(models):
    images = lr_images()
    plain = prompter(f"caption:model={models / 'blip'},max_new_tokens=6,device=cpu").prompts(
        images, [None] * 2
    )
    output, _, processor = direct_generate(models / "blip", [Image.fromarray(a) for a in images], "", 6)
    assert plain == [
        " ".join(text.split()) for text in processor.batch_decode(output, skip_special_tokens=True)
    ]
    started = prompter(f"caption:model={models / 'blip'},question=a photo of,max_new_tokens=6,device=cpu")
    assert all(text.startswith("a photo of") for text in started.prompts(images, [None] * 2))


def test_prepare_stores_the_captions_and_a_missing_model_stops_it(dp2o_cli, models, tmp_path):
    from images import write_photos

    write_photos(tmp_path / "hr", ("astronaut", "coffee"), size=64)
    data = ("--data", f"hr:path={tmp_path / 'hr'},crop=64", "--degradation", "bicubic")
    spec = f"caption:model={models / 'blip'},max_new_tokens=5,device=cpu"
    run = tmp_path / "run"
    done = dp2o_cli("prepare", str(run), *data, "--prompter", spec)
    assert done.exit_code == 0, done.stderr
    store = RunStore(run)
    rows = store.read_table("data", "groups", columns=["group_id", "lr", "prompt"]).to_pylist()
    from dp2o_core.imageio import read_image

    expected = prompter(spec).prompts(
        [read_image(store.root / row["lr"]) for row in rows], [None] * len(rows)
    )
    assert [row["prompt"] for row in rows] == expected and all(expected)
    assert store.record("data")["config"]["prompter"]["name"] == "caption"

    missing = dp2o_cli(
        "prepare", str(tmp_path / "other"), *data, "--prompter", f"caption:model={tmp_path / 'none'}"
    )
    assert missing.exit_code == 2 and str(tmp_path / "none") in missing.stderr + missing.stdout
