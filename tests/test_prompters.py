"""Prompters: each LR input's prompt, written once in the data stage and read by every later
stage — the built-ins (sidecar files, a fixed text) and a third-party tagger."""

from __future__ import annotations

import types

import pytest
from images import write_photos

from dp2o_core import Prompter, hookimpl
from dp2o_core.stages.sample import load_prompt_files
from dp2o_core.store import RunStore
from dp2o_core.testing import check_implementation


class MeanGreyTagger(Prompter):
    """A stand-in for an image tagger: tags each LR by its mean grey level."""

    name = "mean-grey"

    def prompts(self, lr, given):
        return [f"grey {int(image.mean()) // 32}" for image in lr]


class MiscountingTagger(Prompter):
    """Answers one prompt short."""

    name = "miscounting"

    def prompts(self, lr, given):
        return ["a photo"] * (len(lr) - 1)


class WeightlessTagger(Prompter):
    """A tagger whose weights are not on this machine."""

    name = "weightless"

    @classmethod
    def readiness(cls, options):
        from dp2o_core.preflight import Check

        return [Check("prompter weightless", "tagger weights tagger.pth", "missing", problem="not found",
                      fix="download tagger.pth")]  # fmt: skip

    def prompts(self, lr, given):
        raise AssertionError("never called: the preflight stops first")


@hookimpl
def register_prompters(register):
    register(MeanGreyTagger)
    register(MiscountingTagger)
    register(WeightlessTagger)


PLUGIN = types.SimpleNamespace(register_prompters=register_prompters)


@pytest.fixture
def photos(tmp_path):
    write_photos(tmp_path / "hr", ("astronaut", "coffee", "chelsea"), size=64)
    (tmp_path / "hr" / "coffee.txt").write_text("a cup of coffee\n")  # a sidecar prompt
    return tmp_path / "hr"


def prepare(dp2o_cli, run, photos, *extra):
    return dp2o_cli(
        "prepare", str(run), "--data", f"hr:path={photos},crop=64", "--degradation", "bicubic", *extra
    )


def prompts_of(run) -> dict[str, str | None]:
    return {
        row["group_id"]: row["prompt"]
        for row in RunStore(run).read_table("data", "groups", columns=["group_id", "prompt"]).to_pylist()
    }


def test_built_in_prompters_keep_sidecars_or_write_a_fixed_text(dp2o_cli, photos, tmp_path):
    listed = dp2o_cli("plugins", "--all", "--kind", "prompter")
    assert listed.exit_code == 0 and "sidecar" in listed.stdout and "fixed" in listed.stdout
    run = tmp_path / "run"
    assert prepare(dp2o_cli, run, photos).exit_code == 0
    assert sorted(prompts_of(run).values(), key=str) == ["", "", "a cup of coffee"]
    record = RunStore(run).record("data")["config"]
    assert "prompter" not in record  # the default leaves the data fingerprint as it always was

    fixed = prepare(dp2o_cli, run, photos, "--prompter", "fixed:text=a sharp photo")
    assert fixed.exit_code == 0, fixed.stderr
    assert set(prompts_of(run).values()) == {"a sharp photo"}  # the data stage was redone with it
    assert RunStore(run).record("data")["config"]["prompter"]["name"] == "fixed"
    kept = prepare(dp2o_cli, run, photos, "--prompter", "fixed:text=a sharp photo,keep_sidecar=true")
    assert kept.exit_code == 0, kept.stderr
    assert sorted(prompts_of(run).values()) == ["a cup of coffee", "a sharp photo", "a sharp photo"]


def test_a_third_party_tagger_prompts_the_sampling_and_a_resumed_run_reads_the_same_text(
    dp2o_cli, dp2o_add_plugin, photos, tiny_sd, tmp_path
):
    check_implementation(MeanGreyTagger)
    dp2o_add_plugin(PLUGIN, name="tagger")
    run = tmp_path / "run"
    spec = f"sd2:model={tiny_sd},steps=1,device=cpu,geometry=exact,controlnet=new"
    sampled = dp2o_cli(
        "sample", str(run), "--backbone", spec, "--data", f"hr:path={photos},crop=64",
        "--degradation", "bicubic", "--prompter", "mean-grey", "-m", "2",
    )  # fmt: skip
    assert sampled.exit_code == 0, sampled.stderr
    tags = set(prompts_of(run).values())
    assert tags and all(tag.startswith("grey ") for tag in tags)
    assert tags <= set(load_prompt_files(RunStore(run)))  # the backbone embedded exactly these texts
    again = dp2o_cli("sample", str(run))  # the run's own data stage, prompts and all
    assert again.exit_code == 0, again.stderr
    assert set(prompts_of(run).values()) == tags


def test_a_prompter_that_miscounts_is_named_and_nothing_is_written(
    dp2o_cli, dp2o_add_plugin, photos, tmp_path
):
    dp2o_add_plugin(PLUGIN, name="tagger")
    run = tmp_path / "run"
    result = prepare(dp2o_cli, run, photos, "--prompter", "miscounting")
    assert result.exit_code != 0
    assert "prompter 'miscounting' gave 2 prompts for 3 images" in result.stderr
    assert not RunStore(run).done_groups("data")
    unknown = prepare(dp2o_cli, tmp_path / "other", photos, "--prompter", "ram")
    assert unknown.exit_code == 2 and "prompter" in unknown.stderr and "sidecar" in unknown.stderr


def test_evaluation_inputs_carry_the_prompters_text(dp2o_plugin_manager, photos):
    from dp2o_core.evaluation import load_inputs
    from dp2o_core.specs import resolve_spec

    dataset = resolve_spec(dp2o_plugin_manager, "dataset", f"hr:path={photos},crop=64").build()
    degradation = resolve_spec(dp2o_plugin_manager, "degradation", "bicubic").build()
    fixed = resolve_spec(dp2o_plugin_manager, "prompter", "fixed:text=a photo").build()
    assert {item.prompt for item in load_inputs(dataset, degradation, 0, fixed)} == {"a photo"}
    own = {item.id: item.prompt for item in load_inputs(dataset, degradation, 0)}
    assert sorted(own.values(), key=str) == [None, None, "a cup of coffee"]


def test_upscale_samples_each_input_with_its_prompters_text(dp2o_cli, dp2o_add_plugin, tmp_path, monkeypatch):
    from dp2o_plugins.backbones.tiny_sr.backbone import TinySrBackbone

    seen: list[str] = []
    original = TinySrBackbone.sample

    def recording(self, lr, seeds, prompts=None):
        seen.extend(prompts or [])
        return original(self, lr, seeds, prompts)

    monkeypatch.setattr(TinySrBackbone, "sample", recording)
    write_photos(tmp_path / "lr", ("astronaut", "coffee", "chelsea"), size=16)
    (tmp_path / "lr" / "coffee.txt").write_text("a cup of coffee\n")
    backbone = ("--backbone", "tiny-sr:steps=1,device=cpu")
    plain = dp2o_cli("upscale", str(tmp_path / "lr"), str(tmp_path / "sr"), *backbone)
    assert plain.exit_code == 0, plain.stderr
    assert sorted(seen) == ["", "", "a cup of coffee"]  # the sidecar prompter reads NAME.txt
    seen.clear()
    dp2o_add_plugin(PLUGIN, name="tagger")
    tagged = dp2o_cli(
        "upscale", str(tmp_path / "lr"), str(tmp_path / "sr2"), *backbone, "--prompter", "mean-grey"
    )
    assert tagged.exit_code == 0, tagged.stderr
    assert len(seen) == 3 and all(text.startswith("grey ") for text in seen)


def test_a_prompter_without_its_weights_stops_prepare_and_eval_before_any_work(
    dp2o_cli, dp2o_add_plugin, photos, tmp_path
):
    dp2o_add_plugin(PLUGIN, name="tagger")
    run = tmp_path / "run"
    refused = prepare(dp2o_cli, run, photos, "--prompter", "weightless")
    assert refused.exit_code == 2 and "tagger.pth" in refused.stderr + refused.stdout
    assert not RunStore(run).done_groups("data")
    evaluated = dp2o_cli(
        "eval", "--data", f"hr:path={photos},crop=64", "--degradation", "bicubic",
        "--backbone", "tiny-sr:steps=1,device=cpu", "-m", "1", "--prompter", "weightless",
    )  # fmt: skip
    assert evaluated.exit_code == 2 and "tagger.pth" in evaluated.stderr + evaluated.stdout
