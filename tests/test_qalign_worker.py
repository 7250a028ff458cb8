"""Q-Align scored end to end, as the paper's reward needs it: its worker environment built for
real (transformers 4.x and icecream installed with ``pip install --no-deps --target`` into a
cached folder, first on the path of dp2o's own interpreter — docs/rewards.md's recipe), a tiny
random mPLUG-Owl2 in the ``q-future/one-align`` layout, and ``dp2o score`` with the hybrid
reward running Q-Align in that worker."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from dp2o_plugins.rewards.readiness import QALIGN_WORKER_PACKAGES
from iqa_weights import install_tiny_qalign
from worker_envs import WRAPPER, worker_python

from dp2o_core.registry import PluginManager
from dp2o_core.specs import resolve_spec
from dp2o_core.store import RunStore

#: pyiqa's Q-Align called in the worker's environment directly, without dp2o: the reference.
DIRECT = """
import json, sys
import numpy as np, pyiqa, torch
metric = pyiqa.create_metric("qalign", device="cpu")
images = torch.from_numpy(np.load(sys.argv[1]))
with torch.no_grad():
    print(json.dumps([float(metric(image[None])) for image in images]))
"""


@pytest.fixture
def tiny_qalign_cache(tmp_path, monkeypatch):
    """The tiny Q-Align in a private Hugging Face cache that this process and its workers read."""
    import huggingface_hub.constants as hub

    hub_cache = tmp_path / "hf" / "hub"
    for name, value in (("HF_HUB_CACHE", str(hub_cache)), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    install_tiny_qalign(hub_cache)
    return hub_cache


def test_qalign_scores_in_its_worker_environment_through_dp2o_score(dp2o_cli, sampled_run, tiny_qalign_cache):
    python = worker_python("qalign", QALIGN_WORKER_PACKAGES)
    spec = f"hybrid:fr=[psnr],nr=[qalign],pythons=[qalign={python}],device=cpu"
    resolved = resolve_spec(PluginManager(), "reward", spec)
    checks = resolved.registration.cls.readiness(resolved.options)
    assert all(check.ok for check in checks), [(c.item, c.problem) for c in checks]
    assert any("transformers 4.x" in check.item for check in checks)  # the worker's version is checked

    scored = dp2o_cli("score", str(sampled_run), "--reward", spec)
    assert scored.exit_code == 0, scored.stderr
    store = RunStore(sampled_run)
    table = store.read_table("score", "scores").to_pylist()
    assert len(table) == 3 * 6
    qalign = [row["qalign"] for row in table]
    assert all(1 <= value <= 5 for value in qalign)  # Q-Align's five levels, weighted
    metrics = json.loads((sampled_run / "score" / "stage.json").read_text())["config"]["metrics"]
    assert {m["name"] for m in metrics} == {"psnr", "qalign"}

    # the worker's scores are pyiqa's own in that environment, for the same candidates
    from dp2o_core.imageio import read_image_tensor

    first = [row for row in table if row["group_id"] == table[0]["group_id"]]
    candidates = store.read_table("sample", "candidates").to_pylist()
    image_of = {(c["group_id"], c["candidate"]): store.root / c["image"] for c in candidates}
    images = np.concatenate(
        [read_image_tensor(image_of[row["group_id"], row["candidate"]]).numpy() for row in first]
    )
    np.save(sampled_run.parent / "candidates.npy", images)
    direct = subprocess.run(
        [str(python), "-c", DIRECT, str(sampled_run.parent / "candidates.npy")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    expected = json.loads(direct.stdout.strip().splitlines()[-1])
    assert [row["qalign"] for row in first] == pytest.approx(expected, rel=1e-3)


def test_the_documented_recipe_is_what_the_test_builds():
    """docs/rewards.md shows the same packages and the same interpreter script."""
    from pathlib import Path

    recipe = (Path(__file__).parents[1] / "docs" / "rewards.md").read_text()
    assert "pip install --no-deps --target /opt/qalign-packages " + " ".join(QALIGN_WORKER_PACKAGES) in recipe
    script = WRAPPER.format(packages="/opt/qalign-packages", python="/path/to/dp2o/.venv/bin/python")
    assert script in recipe
