"""The pipeline in the core: stages as objects, run against a run without the CLI; option
roles that keep fingerprints (and finished work) when only the machine changes."""

from __future__ import annotations

import pytest
from images import write_photos
from pydantic import Field

from dp2o_core import Backbone, PluginOptions, runtime_option, training_option
from dp2o_core.config import RunConfig
from dp2o_core.options import RUNTIME, TRAINING, options_with_role
from dp2o_core.pipeline import DataStage, Pipeline, Reporter, RunContext, RunOptions, SampleStage
from dp2o_core.pipeline.guard import FinishedWorkError
from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec
from dp2o_core.store import ProcessInfo, RunStore
from dp2o_core.testing import check_implementation


class RecordingReporter(Reporter):
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def announce(self, stage: str, text: str) -> None:
        self.lines.append((stage, text))


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "imgs"
    write_photos(folder, ("astronaut", "coffee"), size=32)
    return folder


def _context(run, photos, backbone="tiny-sr:steps=2,device=cpu", **sample) -> RunContext:
    config = RunConfig().with_overrides(
        backbone=backbone,
        data=f"hr:path={photos},crop=32",
        degradation="bicubic",
        sample={"num_candidates": 2, **sample},
    )
    return RunContext(RunStore(run), config, PluginManager(), ProcessInfo(), reporter=RecordingReporter())


def test_a_library_user_runs_stages_and_a_second_run_skips_what_is_current(tmp_path, photos):
    pipeline = Pipeline.method().select("data", "sample")
    first = pipeline.run(_context(tmp_path / "run", photos))
    assert first["data"] is not None and first["data"].result.written == 2
    assert first["sample"] is not None and first["sample"].result == 2
    store = RunStore(tmp_path / "run")
    assert store.status("sample").state == "done"
    assert len(store.read_table("sample", "candidates")) == 4
    again = _context(tmp_path / "run", photos)
    assert pipeline.run(again) == {"data": None, "sample": None}
    assert again.reporter.lines == [("data", "current — skipped"), ("sample", "current — skipped")]


def test_runtime_and_training_options_do_not_redo_sampling(tmp_path, photos):
    pipeline = Pipeline.method().select("data", "sample")
    pipeline.run(_context(tmp_path / "run", photos))
    # chunk_size and device are runtime options, train_timesteps a training option of tiny-sr
    moved = _context(
        tmp_path / "run", photos, backbone="tiny-sr:steps=2,device=cpu,chunk_size=1,train_timesteps=10"
    )
    assert pipeline.run(moved)["sample"] is None
    changed = _context(tmp_path / "run", photos, backbone="tiny-sr:steps=3,device=cpu")
    # a sampling option would discard the finished candidates: only with redo
    with pytest.raises(FinishedWorkError, match=r"sample: 2 finished group\(s\).*steps: 2 → 3"):
        pipeline.run(changed)
    changed.options = RunOptions(redo=True)
    result = changed.reporter
    assert pipeline.run(changed)["sample"] is not None
    assert any(stage == "sample" and "redoing" in text for stage, text in result.lines)


def test_a_plugins_own_runtime_option_is_left_out_of_the_fingerprint():
    """The core reads the plugin's declaration, not a list of names: an option called 'gpu'
    is as runtime as 'device'."""

    class Options(PluginOptions):
        steps: int = Field(4, description="Denoising steps.")
        gpu: str = runtime_option("cuda:0", description="Torch device.")
        rank: int = training_option(8, description="LoRA rank.")

    assert options_with_role(Options, RUNTIME) == ["gpu"]
    assert options_with_role(Options, TRAINING) == ["rank"]
    resolved = resolve_spec(PluginManager(), "backbone", "tiny-sr:device=cpu,chunk_size=3,train_timesteps=9")
    record = resolved.fingerprint_record((RUNTIME, TRAINING))
    assert "device" not in record["options"] and "chunk_size" not in record["options"]
    assert "train_timesteps" not in record["options"] and record["options"]["steps"] == 10
    assert "train_timesteps" in resolved.fingerprint_record((RUNTIME,))["options"]


def test_stages_must_come_after_their_upstream_stages():
    with pytest.raises(ValueError, match="'sample' comes before its upstream stage 'data'"):
        Pipeline([SampleStage(), DataStage()])
    with pytest.raises(ValueError, match="no stage named 'smaple'"):
        Pipeline.method().select("smaple")


def test_a_misspelt_component_fails_before_any_stage_writes(tmp_path, photos):
    from dp2o_core.errors import UsageError

    context = _context(tmp_path / "run", photos)
    context.config = context.config.with_overrides(selector="ratoi")
    with pytest.raises(UsageError, match="ratoi"):
        Pipeline.method().select("data", "sample", "pairs").run(context)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_sample_reads_the_config_files_sample_section_and_needs_two_candidates(dp2o_cli, tmp_path, photos):
    """dp2o sample used to default to 32 candidates, ignoring [sample] in --config, and accept -m 1."""
    config = tmp_path / "run.toml"
    config.write_text('backbone = "tiny-sr:steps=2,device=cpu"\n[sample]\nnum_candidates = 3\n')
    run = tmp_path / "run"
    data = f"hr:path={photos},crop=32"
    result = dp2o_cli("sample", str(run), "--config", str(config), "--data", data, "--degradation", "bicubic")
    assert result.exit_code == 0, result.stderr
    assert "3 candidates each" in result.stdout
    assert len(RunStore(run).read_table("sample", "candidates")) == 2 * 3
    assert dp2o_cli("sample", str(run), "-m", "1").exit_code == 2


def test_contract_check_holds_a_backbone_to_prepare_training():
    class NoReference(Backbone):
        """A backbone whose reference would be the policy itself."""

        name = "no-reference"

        def sample(self, lr, seeds, prompts=None): ...
        def encode(self, images): ...
        def encode_condition(self, lr): ...
        def sample_timesteps(self, n, generator=None): ...
        def noisy(self, x0, noise, timesteps): ...
        def predict(self, x_t, timesteps, condition, *, reference=False): ...
        def trainable_parameters(self): ...
        def save(self, directory): ...

    with pytest.raises(AssertionError, match="keeps the default prepare_training"):
        check_implementation(NoReference)
