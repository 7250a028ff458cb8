"""The trainer on a run with known preferences: it learns them, generalises, stops on NaN."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from preference_run import NOISY, SMOOTH, candidate_image, held_out_groups, make_preference_run
from safetensors.torch import load_file
from tiny_models import save_tiny_sd

from dp2o_core.imageio import read_image, read_image_tensor
from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec
from dp2o_core.store import ProcessInfo
from dp2o_core.training.data import Pair, PairOrder, PairTable, TrainingData, swapped_labels
from dp2o_core.training.objective import pair_errors
from dp2o_core.training.settings import TrainSettings
from dp2o_core.training.trainer import Trainer, TrainingDiverged, make_accelerator


@pytest.fixture(scope="module")
def x0_model(tmp_path_factory):
    # x₀-prediction: a tiny random model learns a smooth-vs-noisy preference within a few dozen steps
    return save_tiny_sd(tmp_path_factory.mktemp("sd-x0"), prediction_type="sample")


def _backbone(model):
    return resolve_spec(PluginManager(), "backbone", f"sd2:model={model},device=cpu,geometry=exact").build()


def _trainer(store, backbone, directory, **settings):
    settings = TrainSettings(**{"warmup_steps": 0, "tracker": "none", **settings})
    data = TrainingData(store, backbone, seed=0)
    data.prepare(ProcessInfo())
    return Trainer(backbone, data, settings, directory, make_accelerator(settings, directory))


def _held_out_inputs(store, backbone):
    """x₀ of the held-out group's four candidates and its condition."""
    group = held_out_groups(store)[0]
    row = {r["group_id"]: r for r in store.read_table("data", "groups").to_pylist()}[group]
    hr = read_image(store.root / row["hr"])
    images = (
        torch.from_numpy(np.stack([candidate_image(hr, m) for m in range(4)])).permute(0, 3, 1, 2).float()
    )
    lr = read_image_tensor(store.root / row["lr"])
    with torch.no_grad():
        return backbone.encode(images / 255).float(), {
            **backbone.encode_condition(lr),
            **backbone.encode_prompts([""]),
        }


def _held_out_deltas(backbone, x0, condition, draws=16):
    """Δ of every smooth-vs-noisy pair of the held-out group over fixed timesteps and noises."""
    generator = torch.Generator().manual_seed(123)
    deltas = []
    with torch.no_grad():
        for _ in range(draws):
            t = backbone.sample_timesteps(1, generator=generator)
            noise = torch.randn(1, *x0.shape[1:], generator=generator)
            for w in SMOOTH:
                for loser in NOISY:
                    e = pair_errors(backbone, x0[w : w + 1], x0[loser : loser + 1], condition, t, noise)
                    deltas.append(
                        ((e.policy_winner - e.reference_winner) - (e.policy_loser - e.reference_loser)).item()
                    )
    return torch.tensor(deltas)


def test_training_learns_a_synthetic_preference_and_generalises_to_held_out_images(x0_model, tmp_path):
    backbone = _backbone(x0_model)
    store = make_preference_run(tmp_path, backbone)
    trainer = _trainer(
        store, backbone, tmp_path / "train", max_steps=24, batch_size=20, micro_batch_size=10,
        learning_rate=1e-3, beta=1000.0, checkpoint_every=1000,
    )  # fmt: skip
    held_out = _held_out_inputs(store, backbone)  # encoded now: training releases the VAE encoder
    result = trainer.run()
    with pytest.raises(Exception, match="released for training"):
        backbone.encode(torch.zeros(1, 3, 64, 64))
    accuracy = [m.implicit_accuracy for m in result.history]
    assert accuracy[0] == 0.5  # policy = reference at the first step: every Δ is 0
    assert np.mean(accuracy[-6:]) > 0.8, accuracy
    assert result.history[-1].loss < 0.5 < result.history[0].loss
    assert result.history[-1].winner_margin < result.history[-1].loser_margin
    deltas = _held_out_deltas(backbone, *held_out)
    assert deltas.mean() < 0 and (deltas < 0).float().mean() > 0.65, deltas
    # metrics.jsonl has one line per step, the tuned weights are saved where result says
    lines = (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 25))
    assert (result.weights / "model.safetensors").exists()


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(x0_model, tmp_path):
    backbone = _backbone(x0_model)
    store = make_preference_run(tmp_path, backbone)
    trainer = _trainer(
        store, backbone, tmp_path / "train", max_steps=6, batch_size=4, micro_batch_size=4,
        learning_rate=1e-4, checkpoint_every=2,
    )  # fmt: skip
    predict = backbone.predict
    calls = {"steps": 0}

    def poisoned(x_t, timesteps, condition, *, reference=False):
        out = predict(x_t, timesteps, condition, reference=reference)
        return out * float("nan") if calls["steps"] >= 3 else out

    backbone.predict = poisoned
    with pytest.raises(TrainingDiverged) as error:
        trainer.run(on_step=lambda m: calls.__setitem__("steps", m.step))
    message = str(error.value)
    assert "nan" in message and "step 4" in message and "step-000002" in message and "--resume" in message
    checkpoint = tmp_path / "train" / "checkpoints" / "step-000002"
    assert (checkpoint / "position.json").exists() and (checkpoint / "weights" / "model.safetensors").exists()
    # the weights were not updated with the NaN gradient
    assert all(torch.isfinite(p).all() for p in backbone.trainable_parameters())
    saved = load_file(str(checkpoint / "weights" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in saved.values())


def test_checkpoints_are_pruned_to_the_newest_and_training_resumes_from_them(x0_model, tmp_path):
    backbone = _backbone(x0_model)
    store = make_preference_run(tmp_path, backbone)
    options = dict(max_steps=7, batch_size=4, micro_batch_size=2, learning_rate=1e-4, checkpoint_every=2)
    _trainer(store, backbone, tmp_path / "a", **options).run()
    names = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())
    assert names == ["step-000004", "step-000006"]  # keep_checkpoints=2; none left half-written
    # a second trainer over the same folder continues from step 6 and redoes only step 7
    again = _trainer(store, _backbone(x0_model), tmp_path / "a", **options).run()
    assert again.resumed_from == 6 and [m.step for m in again.history] == list(range(1, 8))


def test_pair_order_is_a_fresh_permutation_each_epoch_and_reproducible():
    order = PairOrder(5, seed=3)
    first, second = [order[p] for p in range(5)], [order[p] for p in range(5, 10)]
    assert sorted(first) == sorted(second) == list(range(5))
    assert first != second
    assert [PairOrder(5, seed=3)[p] for p in range(10)] == first + second


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one precision per process; let a test choose another, then restore."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


@pytest.mark.usefixtures("fresh_accelerate_state")
@pytest.mark.parametrize(
    ("backbone_options", "settings", "saved"),
    [
        ("gradient_checkpointing=true", {"mixed_precision": "bf16"}, "model.safetensors"),
        ("trainable=lora-controlnet,lora_rank=4", {}, "lora.safetensors"),
        # frozen networks in bfloat16 beside the float32 ControlNet, no mixed_precision given:
        # the trainer autocasts in the frozen dtype (the two met in one matmul and failed before)
        ("dtype=bfloat16,gradient_checkpointing=true", {}, "model.safetensors"),
    ],
    ids=["bf16-checkpointing", "lora", "bf16-frozen"],
)
def test_precision_checkpointing_lora_and_tensorboard(x0_model, tmp_path, backbone_options, settings, saved):
    spec = f"sd2:model={x0_model},device=cpu,geometry=exact,{backbone_options}"
    backbone = resolve_spec(PluginManager(), "backbone", spec).build()
    store = make_preference_run(tmp_path, backbone)
    options = TrainSettings(
        max_steps=3, batch_size=4, micro_batch_size=2, learning_rate=1e-3, warmup_steps=0,
        tracker="tensorboard", **settings,
    )  # fmt: skip
    data = TrainingData(store, backbone, seed=0)
    data.prepare(ProcessInfo())
    directory = tmp_path / "train"
    backbone.prepare_training()  # (the trainer calls it again; it is idempotent)
    before = [p.detach().clone() for p in backbone.trainable_parameters()]
    assert before
    result = Trainer(backbone, data, options, directory, make_accelerator(options, directory)).run()
    assert all(np.isfinite(m.loss) and np.isfinite(m.grad_norm) for m in result.history)
    after = list(backbone.trainable_parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    assert all(p.dtype == torch.float32 for p in after)
    assert (result.weights / saved).exists()
    assert list((directory / "logs").rglob("events.out.tfevents.*"))


def test_fp16_on_the_cpu_is_refused_with_the_alternatives(tmp_path):
    with pytest.raises(Exception, match="fp16 needs a GPU.*bf16 or no"):
        make_accelerator(TrainSettings(mixed_precision="fp16"), tmp_path, cpu=True)


def test_training_without_the_caches_encodes_every_step_and_matches_the_cached_run(x0_model, tmp_path):
    histories = []
    for cache in (True, False):
        backbone = _backbone(x0_model)
        store = make_preference_run(tmp_path / str(cache), backbone)
        settings = TrainSettings(
            max_steps=3, batch_size=4, micro_batch_size=2, learning_rate=1e-3, warmup_steps=0,
            tracker="none", cache=cache,
        )  # fmt: skip
        data = TrainingData(store, backbone, seed=0, cache=cache)
        assert data.needs_encoder is not cache
        data.prepare(ProcessInfo())
        directory = tmp_path / f"train-{cache}"
        trainer = Trainer(backbone, data, settings, directory, make_accelerator(settings, directory))
        histories.append([m.loss for m in trainer.run().history])
        assert (backbone.vae.encoder is None) is cache  # released only when nothing is encoded
    # the preference run's latents are encodings of the same 8-bit images the PNGs hold
    assert histories[0] == pytest.approx(histories[1], rel=1e-4)


class _Planted:
    """A pickle that, when loaded without weights_only, creates a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_loads_no_code_from_a_planted_checkpoint_and_skips_damaged_ones(x0_model, tmp_path):
    backbone = _backbone(x0_model)
    store = make_preference_run(tmp_path, backbone)
    options = dict(max_steps=6, batch_size=4, micro_batch_size=4, learning_rate=1e-4, checkpoint_every=2)
    full = _trainer(store, backbone, tmp_path / "full", **options).run()
    _trainer(store, _backbone(x0_model), tmp_path / "a", **{**options, "max_steps": 5}).run()
    checkpoints = tmp_path / "a" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000002", "step-000004"]
    assert not list(checkpoints.glob("*/state/custom_checkpoint_*.pkl"))  # schedule is JSON
    assert (checkpoints / "step-000004" / "state" / "schedule.json").exists()
    # a crafted checkpoint: code in a custom-object pickle (never loaded) and in optimizer.bin
    marker = tmp_path / "pwned"
    torch.save(_Planted(marker), checkpoints / "step-000004" / "state" / "custom_checkpoint_0.pkl")
    torch.save(_Planted(marker), checkpoints / "step-000004" / "state" / "optimizer.bin")
    resumed = _trainer(store, _backbone(x0_model), tmp_path / "a", **{**options, "max_steps": 6})
    result = resumed.run()
    assert not marker.exists()
    # step 4 was set aside, step 2 loaded, and steps 3-6 redone exactly as the uninterrupted run
    assert result.resumed_from == 2
    assert (checkpoints / "step-000004.damaged").is_dir()
    final = [m.loss for m in result.history]
    assert final == pytest.approx([m.loss for m in full.history], rel=1e-6)
    a = load_file(str(result.weights / "model.safetensors"))
    b = load_file(str(full.weights / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("damage", ["truncate-model", "empty-optimizer", "position"])
def test_a_damaged_newest_checkpoint_is_reported_and_the_previous_used(x0_model, tmp_path, damage, capsys):
    backbone = _backbone(x0_model)
    store = make_preference_run(tmp_path, backbone)
    options = dict(max_steps=5, batch_size=4, micro_batch_size=4, learning_rate=1e-4, checkpoint_every=2)
    _trainer(store, backbone, tmp_path / "a", **options).run()
    newest = tmp_path / "a" / "checkpoints" / "step-000004"
    if damage == "truncate-model":
        model = newest / "state" / "model.safetensors"
        model.write_bytes(model.read_bytes()[:-100])
    elif damage == "empty-optimizer":
        (newest / "state" / "optimizer.bin").write_bytes(b"")
    else:
        (newest / "position.json").write_text('{"step": ')
    result = _trainer(store, _backbone(x0_model), tmp_path / "a", **options).run()
    assert result.resumed_from == 2
    out = capsys.readouterr().out
    assert "step-000004 cannot be resumed from" in out and "Trying the one before" in out


def test_a_checkpoint_that_cannot_be_written_says_where_and_how_to_continue(x0_model, tmp_path):
    from dp2o_core.errors import Dp2oError

    backbone = _backbone(x0_model)
    store = make_preference_run(tmp_path, backbone)
    options = dict(max_steps=5, batch_size=4, micro_batch_size=4, learning_rate=1e-4, checkpoint_every=2)
    trainer = _trainer(store, backbone, tmp_path / "a", **options)
    save_state = trainer.accelerator.save_state
    calls = []

    def full_disk(path):
        calls.append(path)
        if len(calls) == 2:  # the second checkpoint: torch's message when the disk fills up
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 192 vs 120")
        return save_state(path)

    trainer.accelerator.save_state = full_disk
    with pytest.raises(Dp2oError) as error:
        trainer.run()
    message = str(error.value)
    assert "checkpoint of step 4" in message and "GiB are free" in message and "step-000002" in message
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == ["step-000002"]


def test_a_checkpoint_from_before_schedule_json_resumes_to_the_same_weights(x0_model, tmp_path):
    backbone = _backbone(x0_model)
    store = make_preference_run(tmp_path, backbone)
    options = dict(
        max_steps=6, batch_size=4, micro_batch_size=4, learning_rate=1e-4, checkpoint_every=2, warmup_steps=5
    )
    full = _trainer(store, backbone, tmp_path / "full", **options).run()
    _trainer(store, _backbone(x0_model), tmp_path / "a", **{**options, "max_steps": 5}).run()
    (tmp_path / "a" / "checkpoints" / "step-000004" / "state" / "schedule.json").unlink()  # older layout
    resumed = _trainer(store, _backbone(x0_model), tmp_path / "a", **options).run()
    assert resumed.resumed_from == 4
    assert [m.learning_rate for m in resumed.history] == [m.learning_rate for m in full.history]
    a = load_file(str(resumed.weights / "model.safetensors"))
    b = load_file(str(full.weights / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_swap_labels_exchanges_winner_and_loser_in_the_asked_fraction_reproducibly():
    pairs = [Pair(f"g{i % 7}", i, 100 + i, 1.0 + i) for i in range(40)]
    table = PairTable.of(pairs)
    assert list(table) == pairs
    half = list(swapped_labels(table, 0.5, seed=3))
    swapped = [p for p, q in zip(pairs, half, strict=True) if p != q]
    assert len(swapped) == 20
    assert all(
        q == Pair(p.group_id, p.loser, p.winner, p.weight) for p, q in zip(pairs, half, strict=True) if p != q
    )
    assert list(swapped_labels(table, 0.5, seed=3)) == half  # the seed decides which
    assert list(swapped_labels(table, 0.5, seed=4)) != half
    assert list(swapped_labels(table, 0.0, seed=3)) == pairs
    assert all(q.winner == p.loser for p, q in zip(pairs, swapped_labels(table, 1.0, seed=3), strict=True))


def test_progress_moves_within_a_step_micro_batch_by_micro_batch(x0_model, tmp_path):
    backbone = _backbone(x0_model)
    store = make_preference_run(tmp_path, backbone)
    calls, steps = [], []
    _trainer(store, backbone, tmp_path / "t", max_steps=2, batch_size=4, micro_batch_size=1).run(
        on_step=lambda metrics: steps.append((metrics.step, len(calls))),
        on_micro_batch=lambda done, count: calls.append((done, count)),
    )
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)] * 2
    assert steps == [(1, 4), (2, 8)]  # every micro-batch of a step is reported before the step ends


def test_a_batch_larger_than_the_pairs_and_a_long_warm_up_are_said_before_training():
    from dp2o_core.stages.train import training_warnings

    settings = TrainSettings(batch_size=1024, max_steps=4, warmup_steps=50, learning_rate=2e-5)
    batch, warmup = training_warnings(settings, pairs=4)
    assert "a step of 1024 pairs (--batch-size) exceeds the run's 4 pairs" in batch
    assert "every pair about 256 times" in batch and "--batch-size 4" in batch
    assert "warm-up of 50 steps is longer than the run's 4" in warmup and "ends at 1.6e-06" in warmup
    assert "--warmup-steps" in warmup
    assert training_warnings(TrainSettings(batch_size=4, max_steps=60, warmup_steps=5), pairs=16) == []


def test_batches_read_ahead_equal_batches_read_when_asked(x0_model, tmp_path):
    backbone = _backbone(x0_model)
    store = make_preference_run(tmp_path, backbone)
    chunks = [list(range(start, start + 3)) for start in range(0, 30, 3)]

    def batches(read_ahead: bool) -> list[dict]:
        data = TrainingData(store, backbone, seed=4)
        data.prepare(ProcessInfo())
        seen = []
        for index, chunk in enumerate(chunks):
            if read_ahead and index + 1 < len(chunks):
                data.read_ahead(chunks[index + 1])  # as the trainer does: the next one while this one runs
            batch = data.batch(chunk, "cpu")
            # copies: the batch's buffers are reused once the next batch is handed out
            seen.append({"w": batch.x0_winner.clone(), "l": batch.x0_loser.clone(), "n": batch.noise.clone(),
                         **{k: v.clone() for k, v in batch.condition.items()}})  # fmt: skip
        return seen

    plain, ahead = batches(False), batches(True)
    assert len(plain) == len(ahead) == len(chunks)
    for a, b in zip(plain, ahead, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(plain[0]["w"], plain[1]["w"])  # different pairs, not one buffer seen twice
