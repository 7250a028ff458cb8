"""VQ-R1 (VisualQuality-R1), the paper's reasoning IQA metric: a tiny random Qwen2.5-VL in the
real model's layout, scored by dp2o exactly as its authors' inference code scores, and run by
``dp2o eval --metrics paper`` from the Hugging Face cache."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from iqa_weights import install_tiny_vqr1_in_cache
from tiny_vlms import save_tiny_qwen_vl

from dp2o_core.errors import Dp2oError
from dp2o_core.evaluation import PAPER_METRICS, metric_names, metric_specs
from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec

#: The authors' rating question and thinking instruction, written out here as the reference.
AUTHORS_PROMPT = (
    "You are doing the image quality assessment task. Here is the question: What is your overall rating on "
    "the quality of this picture? The rating should be a float between 1 and 5, rounded to two decimal "
    "places, with 1 representing very poor quality and 5 representing excellent quality. First output the "
    "thinking process in <think> </think> tags and then output the final answer with only one score in "
    "<answer> </answer> tags."
)


@pytest.fixture(scope="module")
def tiny_vqr1(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vqr1") / "VisualQuality-R1-7B"
    save_tiny_qwen_vl(folder)
    return folder


def _authors_scores(folder, images, seed: int, max_new_tokens: int) -> list[float | None]:
    """The authors' batch inference, step by step: chat template with the vision id, left
    padding, sampled generation (top-k 50, top-p 1), the first number of the last answer."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder)
    processor.tokenizer.padding_side = "left"
    messages = [
        [
            {
                "role": "user",
                "content": [{"type": "image", "image": i}, {"type": "text", "text": AUTHORS_PROMPT}],
            }
        ]
        for i in images
    ]
    text = [
        processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True, add_vision_id=True)
        for m in messages
    ]
    inputs = processor(text=text, images=images, padding=True, return_tensors="pt")
    torch.manual_seed(seed)
    generated = model.generate(
        **inputs, use_cache=True, max_new_tokens=max_new_tokens, do_sample=True, top_k=50, top_p=1
    )
    replies = processor.batch_decode(
        [out[len(given) :] for given, out in zip(inputs.input_ids, generated, strict=True)],
        skip_special_tokens=True,
        clean_up_tokenization_spaces=False,
    )
    scores: list[float | None] = []
    for reply in replies:
        answers = re.findall(r"<answer>(.*?)</answer>", reply, re.DOTALL)
        answer = answers[-1].strip() if answers else reply.strip()
        number = re.search(r"\d+(\.\d+)?", answer)
        scores.append(float(number.group()) if number else None)
    return scores


def test_vqr1_scores_what_the_authors_inference_gives_for_the_same_seed(tiny_vqr1):
    from PIL import Image

    from dp2o_core.imageio import tensor_to_array

    spec = f"vqr1:model={tiny_vqr1},device=cpu,dtype=float32,max_new_tokens=40,batch_size=3,attempts=1,seed=7"
    reward = resolve_spec(PluginManager(), "reward", spec).build()
    assert [(m.name, m.mode, m.lower_better) for m in reward.metrics()] == [("vqr1", "NR", False)]
    generator = torch.Generator().manual_seed(0)
    candidates = torch.rand(3, 3, 56, 84, generator=generator)  # on the 28-px grid: no resize
    theirs = _authors_scores(
        tiny_vqr1, [Image.fromarray(tensor_to_array(c)) for c in candidates], seed=7, max_new_tokens=40
    )
    assert None not in theirs  # random replies of 40 characters hold a number
    ours = reward.score(candidates)["vqr1"]
    assert ours == theirs
    assert reward.score(candidates)["vqr1"] == ours  # seeded: the same images, the same scores
    other_seed = resolve_spec(PluginManager(), "reward", spec.replace("seed=7", "seed=8")).build()
    assert other_seed.score(candidates)["vqr1"] != ours
    assert reward.reward({"vqr1": ours}) == ours  # higher is better, used as it is


def test_a_reply_without_a_number_is_sampled_again_and_then_named(tiny_vqr1, monkeypatch):
    spec = f"vqr1:model={tiny_vqr1},device=cpu,dtype=float32,attempts=2,seed=3"
    reward = resolve_spec(PluginManager(), "reward", spec).build()
    replies = {3: ["no score yet", "<think>fine</think><answer>4.25</answer>"], 4: ["<answer> 2 </answer>"]}
    asked: list[tuple[int, int]] = []

    def fake_replies(images, seed):
        asked.append((len(images), seed))
        return replies[seed]

    monkeypatch.setattr(reward, "_replies", fake_replies)
    assert reward.score(torch.rand(2, 3, 28, 28))["vqr1"] == [2.0, 4.25]
    assert asked == [(2, 3), (1, 4)]  # only the candidate without a number is asked again, new seed

    replies[4] = ["still thinking"]
    with pytest.raises(Dp2oError, match=r"candidate 0 got no score in 2 replies.*still thinking"):
        reward.score(torch.rand(2, 3, 28, 28))


def test_answer_parsing_and_image_grid():
    from dp2o_plugins.rewards.vqr1 import answer_score, qwen_size

    assert answer_score("<think>3 things</think><answer>3.71</answer>") == 3.71
    assert answer_score("<answer>1</answer> then <answer>score: 4.5/5</answer>") == 4.5  # the last answer
    assert answer_score("I would say 2.5 overall") == 2.5  # no tags: the whole reply
    assert answer_score("<answer>excellent</answer>") is None
    assert qwen_size(512, 512) == (504, 504)  # the paper's 512-px outputs
    assert qwen_size(128, 200) == (140, 196)
    assert qwen_size(20, 20) == (56, 56)  # below 4 × 28² pixels: enlarged
    assert qwen_size(5000, 5000) == (3556, 3556)  # above 16384 × 28²: reduced
    assert qwen_size(3000, 40) == (2996, 28)


def test_paper_metrics_are_the_fourteen_with_vqr1_and_a_metric_takes_options():
    assert len(PAPER_METRICS) == 14 and "vqr1" in metric_names("paper")
    assert metric_names("vqr1,psnry,vqr1") == ["vqr1", "psnry"]
    specs = metric_specs("psnry,paper,vqr1:model=/m/VQ-R1,thinking=false,lpips:net=vgg,ssim")
    assert list(specs) == ["psnry", *[m for m in PAPER_METRICS if m != "psnry"]]  # paper's order, no repeat
    assert specs["vqr1"] == "vqr1:model=/m/VQ-R1,thinking=false" and specs["lpips"] == "lpips:net=vgg"
    assert specs["ssim"] == "ssim" and specs["maniqa"] == "maniqa"
    # -NAME leaves a metric out: the paper's set without its two 7 B models, or without fidelity
    assert metric_names("paper,-vqr1,-qalign") == [m for m in PAPER_METRICS if m not in ("vqr1", "qalign")]
    assert metric_names("paper,-fidelity") == [m for m in PAPER_METRICS if m not in ("psnry", "ssim")]


def test_dp2o_eval_runs_vqr1_from_the_hugging_face_cache(dp2o_cli, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    hub_cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    args = ("eval", "--data", "photos:split=held-out,crop=96,max_images=1", "--degradation", "bicubic")
    args += ("--backbone", "tiny-sr:steps=2", "-m", "2", "--json")

    missing = dp2o_cli(*args, "--metrics", "vqr1,psnry")
    assert missing.exit_code == 0, missing.stderr
    record = json.loads(missing.stdout)
    assert "psnry" in record["metrics"] and "vqr1" not in record["metrics"]
    assert "TianheWu/VisualQuality-R1-7B" in record["unavailable"]["vqr1"]

    install_tiny_vqr1_in_cache(hub_cache)
    # options after the name, as in a plugin spec: here a short reply (a random model's)
    result = dp2o_cli(*args, "--metrics", "psnry,vqr1:max_new_tokens=40,dtype=float32")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["metrics"]["vqr1"] == {"mode": "NR", "lower_better": False}
    value = record["models"][0]["metrics"]["vqr1"]["mean"]
    assert math.isfinite(value)
