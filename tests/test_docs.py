"""The docs agree with the code: every hook and fixture documented, no stale counts, no links to
files or commands that do not exist."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from conftest import REPO

from dp2o_core import hookspecs
from dp2o_core.registry import KINDS


def test_every_hook_is_documented_with_its_signature():
    guide = (REPO / "docs" / "plugins.md").read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("register_")]
    assert sorted(hooks) == [
        "register_backbones",
        "register_datasets",
        "register_degradations",
        "register_prompters",
        "register_rewards",
        "register_selectors",
        "register_weightings",
    ]
    for name in hooks:
        signature = str(inspect.signature(getattr(hookspecs, name))).replace("'", "")
        assert f"{name}{signature}" in guide, f"{name}{signature} is missing from docs/plugins.md"


def test_every_testing_fixture_is_documented():
    guide = (REPO / "docs" / "plugins.md").read_text()
    for fixture in ("dp2o_plugin_manager", "dp2o_add_plugin", "dp2o_cli"):
        assert f"| `{fixture}` |" in guide
    assert "dp2o_core.testing.check_implementation(cls)" in guide


# -- prose that must agree with the code ---------------------------------------------------------
NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}
#: Files outside the repository that earlier drafts pointed to; users do not have them.
OUTSIDE_FILES = ("PAPER.md", "DESIGN.md", "STYLE.md", "ENV.md", "../shared")


def _project_texts() -> list[tuple[Path, str]]:
    """Every source, doc and configuration text file of the project (not the virtual envs, not
    this file, which quotes what it looks for)."""
    skip = {".git", ".venv", ".ci-venv", "dp2o.egg-info", "__pycache__", "build", "dist"}
    files = []
    for path in sorted(REPO.rglob("*")):
        if path.suffix not in (".py", ".md", ".toml", ".txt", ".cfg", ".yaml", ".yml") or not path.is_file():
            continue
        if skip & set(path.relative_to(REPO).parts) or path.resolve() == Path(__file__).resolve():
            continue
        files.append((path, path.read_text(encoding="utf-8")))
    return files


def test_no_file_refers_to_a_file_outside_the_project():
    found = [
        f"{path.relative_to(REPO)}: {name}"
        for path, text in _project_texts()
        for name in OUTSIDE_FILES
        if name in text
    ]
    assert not found, "references to files the project does not contain:\n" + "\n".join(found)


def test_every_docs_page_that_is_referred_to_exists():
    missing = []
    for path, text in _project_texts():
        for page in re.findall(r"docs/([A-Za-z0-9_-]+\.md)", text):
            if not (REPO / "docs" / page).is_file():
                missing.append(f"{path.relative_to(REPO)}: docs/{page}")
        if path.parent == REPO / "docs":
            for page in re.findall(r"\]\(([A-Za-z0-9_-]+\.md)", text):
                if not (REPO / "docs" / page).is_file():
                    missing.append(f"{path.relative_to(REPO)}: {page}")
    assert not missing, "links to docs pages that do not exist:\n" + "\n".join(missing)


def test_counts_of_interfaces_in_prose_match_the_code():
    """'the four interfaces' went stale once datasets and degradations became plugins."""
    kinds = len(KINDS)
    pattern = re.compile(
        r"\b(" + "|".join(NUMBER_WORDS) + r")\s+(interfaces|extension points|plugin kinds|kinds of plugin)",
        re.IGNORECASE,
    )
    wrong = [
        f"{path.relative_to(REPO)}: {match.group(0)!r} (there are {kinds})"
        for path, text in _project_texts()
        for match in pattern.finditer(text)
        if NUMBER_WORDS[match.group(1).lower()] != kinds
    ]
    assert not wrong, "\n".join(wrong)


def test_every_command_the_docs_name_exists():
    from dp2o_cli.app import COMMANDS

    commands = set(COMMANDS)
    named = set()
    for path, text in _project_texts():
        if path.suffix == ".md":
            named |= {(path.relative_to(REPO), c) for c in re.findall(r"`dp2o ([a-z]+)[ `]", text)}
    unknown = sorted(f"{path}: dp2o {command}" for path, command in named if command not in commands)
    assert not unknown, "the docs name commands dp2o does not have:\n" + "\n".join(unknown)


def test_every_pipeline_stage_is_a_run_store_stage_and_documented():
    from dp2o_core.pipeline import Pipeline
    from dp2o_core.store import STAGES

    assert Pipeline.method().names == list(STAGES)
    architecture = (REPO / "docs" / "architecture.md").read_text()
    for stage in Pipeline.method().stages:
        assert f"`{type(stage).__name__}`" in architecture, (
            f"{type(stage).__name__} is not in docs/architecture.md"
        )


def test_option_roles_are_documented_with_the_helpers_that_declare_them():
    guide = (REPO / "docs" / "plugins.md").read_text()
    for helper in ("runtime_option", "training_option"):
        assert f"`{helper}(" in guide
