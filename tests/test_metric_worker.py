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
