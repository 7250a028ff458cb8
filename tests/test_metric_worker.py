"""A metric in another Python interpreter: the worker protocol, forced through this interpreter,
gives the scores in-process scoring gives; a worker that crashes or hangs is named."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from dp2o_core.errors import Dp2oError
from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    reference = torch.rand(1, 3, 96, 96, generator=generator)
    noise = torch.rand(3, 3, 96, 96, generator=generator)
    weights = torch.tensor([0.1, 0.4, 0.8]).view(3, 1, 1, 1)
    return (1 - weights) * reference + weights * noise, reference


def test_the_worker_scores_equal_in_process_scores():
    candidates, reference = _images()
    manager = PluginManager()
    here = resolve_spec(manager, "reward", "hybrid-offline").build()
    there = resolve_spec(manager, "reward", f"hybrid-offline:python={sys.executable},batch_size=2").build()
    expected = here.score(candidates, reference)
    got = there.score(candidates, reference)
    assert set(got) == set(expected) == {"fsim", "vsi", "gmsd", "niqe", "piqe"}
    for name in expected:
        assert got[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name
    # a worker is an implementation detail: the fingerprinted record does not change
    record = resolve_spec(manager, "reward", f"hybrid-offline:python={sys.executable}").fingerprint_record(
        ("runtime",)
    )
    assert record == resolve_spec(manager, "reward", "hybrid-offline").fingerprint_record(("runtime",))


def _fake_python(tmp_path, body: str):
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(0o755)
    return script


def test_a_worker_that_crashes_is_named_with_its_stderr(tmp_path):
    python = _fake_python(tmp_path, "echo 'ImportError: no module named transformers_v4' >&2; exit 3")
    reward = resolve_spec(PluginManager(), "reward", f"pyiqa:metric=psnr,python={python}").build()
    with pytest.raises(Dp2oError) as caught:
        reward.prepare()
    message = str(caught.value)
    assert "metric 'psnr'" in message and str(python) in message and "exited with status 3" in message
    assert "no module named transformers_v4" in message


def test_a_worker_that_hangs_is_stopped(tmp_path):
    python = _fake_python(tmp_path, "sleep 30")
    spec = f"pyiqa:metric=psnr,python={python},worker_timeout=1"
    reward = resolve_spec(PluginManager(), "reward", spec).build()
    with pytest.raises(Dp2oError, match=r"gave no answer within 1 s and was stopped"):
        reward.prepare()


def test_an_interpreter_that_cannot_run_fails_the_preflight(tmp_path):
    from dp2o_plugins.rewards.pyiqa_metric import PyiqaReward

    options = PyiqaReward.Options(metric="psnr", python=tmp_path / "no-such-python")
    checks = PyiqaReward.readiness(options)
    assert any(c.status == "missing" and "cannot run it" in c.problem for c in checks)
    ready = PyiqaReward.readiness(PyiqaReward.Options(metric="psnr", python=sys.executable))
    assert all(c.ok for c in ready)


def test_pythons_puts_one_hybrid_member_in_a_worker():
    """pythons=[member=interpreter] moves that member alone; python= moves every pyiqa member."""
    manager = PluginManager()
    one = resolve_spec(manager, "reward", f"hybrid-offline:pythons=[piqe={sys.executable}]").build()
    assert {name: m.options.python for name, m in one.members().items()} == {
        "fsim": None, "vsi": None, "gmsd": None, "niqe": None, "piqe": Path(sys.executable),
    }  # fmt: skip
    every = resolve_spec(manager, "reward", f"hybrid-offline:python={sys.executable}").build()
    assert {m.options.python for m in every.members().values()} == {Path(sys.executable)}
    # the same KEY=VALUE list form gives a member its weight file (a config file uses a table)
    weights = resolve_spec(manager, "reward", "hybrid-offline:weights=[niqe=/w/niqe.mat]").options.weights
    assert weights == {"niqe": Path("/w/niqe.mat")}


FAKE_WORKER = """
import json, struct, sys
import numpy as np
from dp2o_plugins.worker_protocol import HELLO, array_bytes, read_frame, write_frame

mode = sys.argv[1]
out = sys.stdout.buffer
out.write(HELLO)
read_frame(sys.stdin.buffer)
write_frame(out, json.dumps({"ok": True, "lower_better": False, "pyiqa": "fake"}).encode())
out.flush()
header = json.loads(read_frame(sys.stdin.buffer))
count = len(np.load(__import__("io").BytesIO(read_frame(sys.stdin.buffer))))
if header.get("reference"):
    read_frame(sys.stdin.buffer)
if mode == "long-stderr":
    sys.stderr.write("x" * 30_000_000 + "\\n")
    sys.stderr.flush()
    sys.exit(5)
if mode == "huge-frame":
    out.write(struct.pack(">Q", 1 << 30))
    out.flush()
    sys.stdin.read()
    sys.exit(0)
headers = {"list": b"[1, 2]", "binary": b"\\xff\\xfe\\x00"}
write_frame(out, headers.get(mode, b'{"ok": true}'))
arrays = {
    "too-few": np.zeros(count - 1), "too-many": np.zeros(count + 1), "two-d": np.zeros((count, 2)),
    "strings": np.array(["a"] * count), "nan": np.array([0.5] + [float("nan")] * (count - 1)),
}
if mode in arrays:
    write_frame(out, array_bytes(arrays[mode]))
out.flush()
sys.stdin.read()
"""


def _fake_worker(tmp_path, mode: str) -> Path:
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    return _fake_python(tmp_path, f'exec "{sys.executable}" "{script}" {mode}')


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("list", r"sent a reply header that is a JSON list: \[1, 2\]"),
        ("binary", r"sent a reply header that is not UTF-8 JSON"),
        ("too-few", r"answered 3 candidates with a float64 array of shape \(2,\)"),
        ("too-many", r"answered 3 candidates with a float64 array of shape \(4,\)"),
        ("two-d", r"answered 3 candidates with a float64 array of shape \(3, 2\)"),
        ("strings", r"answered 3 candidates with a <U1 array"),
        ("nan", r"scored candidate 1 of 3 nan"),
        ("huge-frame", r"announced a reply of 1073741824 bytes"),
    ],
)
def test_a_malformed_reply_is_a_clear_error_and_stops_the_worker(tmp_path, mode, message):
    import resource

    python = _fake_worker(tmp_path, mode)
    reward = resolve_spec(PluginManager(), "reward", f"pyiqa:metric=psnr,python={python}").build()
    reward.prepare()
    candidates, reference = _images()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(Dp2oError, match=message) as caught:
        reward.score(candidates, reference)
    assert "Traceback" not in str(caught.value) and len(str(caught.value)) < 3000
    assert reward.metric.process.wait(timeout=10) is not None  # the worker is stopped
    # a claimed 1 GiB frame is refused, never allocated
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200_000  # KiB


def test_a_huge_stderr_line_is_cut_in_the_error(tmp_path):
    python = _fake_worker(tmp_path, "long-stderr")
    reward = resolve_spec(PluginManager(), "reward", f"pyiqa:metric=psnr,python={python}").build()
    reward.prepare()
    with pytest.raises(Dp2oError, match=r"exited with status 5") as caught:
        reward.score(*_images())
    assert "xxxx […]" in str(caught.value) and len(str(caught.value)) < 4000


def test_output_printed_before_the_worker_starts_is_skipped(tmp_path):
    """An interpreter whose start-up prints to stdout (a banner, a site hook) still serves scores."""
    python = _fake_python(tmp_path, f'echo "Welcome to this environment"; exec "{sys.executable}" "$@"')
    candidates, reference = _images()
    there = resolve_spec(PluginManager(), "reward", f"pyiqa:metric=psnr,python={python}").build()
    here = resolve_spec(PluginManager(), "reward", "pyiqa:metric=psnr").build()
    assert there.score(candidates, reference)["psnr"] == pytest.approx(
        here.score(candidates, reference)["psnr"], rel=1e-6
    )


def test_a_nan_score_stops_the_score_stage_and_stores_nothing_of_the_group():
    from dp2o_core.stages.score import check_scores

    check_scores({"psnr": [1.0, 2.0]}, "g", [0, 1])
    with pytest.raises(Dp2oError, match=r"metric 'niqe' scored candidate 4 of group 'g' nan"):
        check_scores({"psnr": [1.0, 2.0], "niqe": [3.0, float("nan")]}, "g", [3, 4])
    with pytest.raises(Dp2oError, match=r"gave 1 scores for the 2 candidates"):
        check_scores({"psnr": [1.0]}, "g", [0, 1])


def test_a_worker_option_that_names_no_member_is_refused_and_none_removes_one():
    from dp2o_core.config import RunConfig

    manager = PluginManager()
    with pytest.raises(Dp2oError, match=r"pythons names 'ssmi', which is not a member of this reward"):
        resolve_spec(manager, "reward", f"hybrid-offline:pythons=[ssmi={sys.executable}]")
    # python=none and pythons=[member=none] take a recorded worker back out, layered like any flag
    recorded = RunConfig().with_overrides(reward=f"hybrid-offline:python={sys.executable}")
    layered = recorded.with_overrides(reward="python=none")
    built = layered.resolve(manager, ("reward",))["reward"].build()
    assert {m.options.python for m in built.members().values()} == {None}
    one_back = resolve_spec(manager, "reward", f"hybrid-offline:python={sys.executable},pythons=[piqe=none]")
    members = one_back.build().members()
    assert members["piqe"].options.python is None and members["niqe"].options.python == Path(sys.executable)
    assert resolve_spec(manager, "reward", "pyiqa:metric=psnr,python=none").options.python is None
