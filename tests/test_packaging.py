"""The built wheel: namespaced import names, every package included, the CLI importable from it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

COPY_IGNORE = (".git", "build", "dist", "*.egg-info", "__pycache__", ".*venv*", ".pytest_cache", "runs")
SOURCE_FOLDERS = {"dp2o_core": "dp2o_core", "dp2o_plugins": "plugins", "dp2o_cli": "cli"}


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built and pip-installed into an empty target folder."""
    source = tmp_path_factory.mktemp("source") / "dp2o"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*COPY_IGNORE))
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(dist),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("dp2o-*.whl")
    target = tmp_path_factory.mktemp("target")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    return target


def test_no_top_level_plugins_or_cli_package(installed_wheel):
    top_level = {p.name for p in installed_wheel.iterdir() if not p.name.endswith(".dist-info")}
    assert top_level - {"bin"} == {"dp2o_core", "dp2o_plugins", "dp2o_cli"}


def test_every_source_package_is_in_the_wheel(installed_wheel):
    for import_name, folder in SOURCE_FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder)
            assert (installed_wheel / import_name / relative / "__init__.py").is_file(), relative


def test_the_wheel_imports_and_runs_from_the_target(installed_wheel, tmp_path):
    code = (
        "import dp2o_core, dp2o_plugins.selectors, dp2o_cli.app\n"
        "print(dp2o_core.__file__)\n"
        "raise SystemExit(dp2o_cli.app.run(['plugins', '--all', '--json']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(installed_wheel)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith(str(installed_wheel))
    assert '"ratio"' in done.stdout


def test_wheel_declares_the_console_script_and_pytest_plugin(installed_wheel):
    (dist_info,) = installed_wheel.glob("dp2o-*.dist-info")
    entry_points = (dist_info / "entry_points.txt").read_text()
    assert re.search(r"^dp2o = dp2o_cli\.app:main$", entry_points, re.M)
    assert re.search(r"^dp2o = dp2o_core\.testing$", entry_points, re.M)


def test_readme_commands_are_the_ones_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    install = re.search(r"<!-- install -->\s*```(?:bash|sh)?\n(.+?)\n```", readme, re.S).group(1).strip()
    test = re.search(r"<!-- test -->\s*```(?:bash|sh)?\n(.+?)\n```", readme, re.S).group(1).strip()
    assert install in ci
    assert test in ci
