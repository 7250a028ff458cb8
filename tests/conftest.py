"""Shared helpers: the third-party test plugins and running ``dp2o`` as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN_PACKAGES = REPO / "tests" / "plugin_packages"
TEST_DISTRIBUTIONS = ("dp2o-example-selector", "dp2o-broken-plugin")


@dataclass
class Completed:
    """A finished ``dp2o`` process."""

    returncode: int
    stdout: str
    stderr: str


def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="session")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment in which both test plugin packages are pip-installed.

    CI installs them into the virtual environment (.ci/run); elsewhere they are
    pip-installed into a temporary folder put on PYTHONPATH, so the same tests run.
    """
    env = dict(os.environ)
    env.pop("DP2O_LOAD_PLUGINS", None)
    env.pop("DP2O_DISABLE_PLUGINS", None)
    env.pop("DP2O_PLUGIN_ERRORS", None)
    missing = [d for d in TEST_DISTRIBUTIONS if not _installed(d)]
    if missing:
        target = tmp_path_factory.mktemp("plugin-site")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--target",
                str(target),
                *(str(PLUGIN_PACKAGES / d) for d in missing),
            ],
            check=True,
            capture_output=True,
        )
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    return env


def run_dp2o(*args: str, env: dict[str, str], cwd: Path | None = None) -> Completed:
    """Run the installed ``dp2o`` console script as a separate process."""
    script = Path(sys.executable).with_name("dp2o")
    done = subprocess.run([str(script), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    return Completed(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD 2 model folder in the hub layout (written once per test session; read only)."""
    from tiny_models import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture
def sampled_run(dp2o_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run whose data stage holds three 128-px photographs and whose sample stage holds six
    distorted copies of each (no model needed), offline, with a cache of its own."""
    from candidates import write_candidates
    from images import write_photos

    from dp2o_core.store import RunStore

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DP2O_CACHE", str(tmp_path / "dp2o-cache"))
    folder = tmp_path / "imgs"
    write_photos(folder, ("astronaut", "chelsea", "coffee"), size=128)
    run = tmp_path / "run"
    assert dp2o_cli("prepare", str(run), "--data", f"hr:path={folder},crop=128").exit_code == 0
    write_candidates(RunStore(run))
    return run
