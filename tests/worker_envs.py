"""Worker environments the tests build for real: packages installed with ``pip install
--no-deps --target`` into a cached folder, and an interpreter — dp2o's own, that folder first on
its path — exactly as docs/rewards.md tells users to make one.

The folder is kept between runs (``$DP2O_TEST_CACHE``, else ``~/.cache/dp2o/test-envs``), one
per package list, built beside its final name and renamed into place, under a lock. Building it
downloads from the package index; with ``DP2O_TESTS_OFFLINE=1`` a test that needs one is
skipped instead of failing.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

#: The interpreter script docs/rewards.md shows: the packages' folder first on the path of
#: dp2o's own interpreter.
WRAPPER = '#!/bin/sh\nPYTHONPATH={packages}${{PYTHONPATH:+:$PYTHONPATH}} exec {python} "$@"\n'


def worker_python(name: str, packages: Sequence[str]) -> Path:
    """The interpreter of a worker environment with ``packages`` (built on first use)."""
    root = Path(os.environ.get("DP2O_TEST_CACHE") or Path.home() / ".cache" / "dp2o" / "test-envs")
    key = hashlib.sha256("\n".join([sys.executable, *packages]).encode()).hexdigest()[:12]
    folder = root / f"{name}-{key}"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "python").is_file():
            _build(folder, packages)
    return folder / "python"


def _build(folder: Path, packages: Sequence[str]) -> None:
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--target",
        str(partial / "site"),
    ]
    done = subprocess.run([*command, *packages], capture_output=True, text=True)
    if done.returncode != 0:
        reason = f"pip could not install {' '.join(packages)}: {done.stderr.strip()[-800:]}"
        if os.environ.get("DP2O_TESTS_OFFLINE"):
            pytest.skip(reason)
        pytest.fail(reason + "\n(on a machine without the package index, set DP2O_TESTS_OFFLINE=1 to skip)")
    script = partial / "python"
    script.write_text(WRAPPER.format(packages=folder / "site", python=sys.executable))
    script.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
