"""``ram-dape``: the DP²O-SR models' own prompts — RAM (Swin-L) tags with the DAPE weights.

The tagger's code is the ``ram`` package the DP²O-SR repository ships (not on the package
index; it needs transformers 4.x, timm, loralib and fairscale), so it runs in a worker process
of the interpreter ``python`` names (:mod:`dp2o_plugins.prompters.ram_worker`), started at
the first batch and kept for the rest. The preflight imports that code in that interpreter
and looks for both weight files and BERT's tokenizer before any stage runs.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from dp2o_core import PluginOptions, Prompter, runtime_option

WORKER_SCRIPT = Path(__file__).with_name("ram_worker.py")
#: What the preflight imports in the worker's interpreter: the model and what tagging uses.
_IMPORT_PROBE = "import sys; sys.path.insert(0, sys.argv[1]); import ram, ram.models.ram_lora, torchvision"
_ENVIRONMENT_FIX = (
    "RAM's code needs transformers 4.x, timm, loralib and fairscale: make an environment with them "
    "and pass python=/path/to/it/bin/python (docs/data.md, 'RAM + DAPE prompts')"
)


class RamDapeOptions(PluginOptions):
    """Where the tagger's code, weights and environment are."""

    code: Path = Field(
        ..., description="Folder holding the ram package: a clone of the DP²O-SR (or SeeSR) repository."
    )
    ram: Path = Field(..., description="RAM Swin-L weights (ram_swin_large_14m.pth).")
    dape: Path = Field(..., description="DAPE weights (DAPE.pth).")
    tokenizer: str = runtime_option(
        "bert-base-uncased", description="BERT's tokenizer RAM builds with: a hub id or a local folder."
    )
    python: Path | None = runtime_option(
        None, description="Interpreter of the tagger's environment; none: dp2o's own (it must import ram)."
    )
    device: str = runtime_option("auto", description="Torch device ('auto' picks cuda when available).")
    timeout: float = runtime_option(900.0, gt=0, description="Seconds the worker may take to answer.")

    @field_validator("code", "ram", "dape", "python", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return Path(value).expanduser() if isinstance(value, str) and value.strip() else value


class RamDapePrompter(Prompter):
    """Tags of each LR image by RAM Swin-L with DAPE, joined with ", " (the released models' prompts)."""

    name = "ram-dape"
    Options = RamDapeOptions

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self._worker: Any = None

    @classmethod
    def readiness(cls, options: Any) -> list:
        """The code folder, both weight files, BERT's tokenizer, and the interpreter importing
        the tagger's code (which names the first package it misses)."""
        from dp2o_plugins.network import cached_or_hub_check

        from dp2o_core.preflight import Check

        who = f"prompter {cls.name}"
        checks = []
        package = options.code / "ram" / "models" / "ram_lora.py"
        if package.is_file():
            checks.append(Check(who, f"ram package in {options.code}", "present"))
            checks.append(_interpreter_check(who, options.python or Path(sys.executable), options.code))
        else:
            checks.append(
                Check(
                    who,
                    f"ram package in {options.code}",
                    "missing",
                    problem=f"{package} does not exist",
                    fix="code= names a clone of github.com/cswry/DP2O-SR (its ram/ folder)",
                )  # fmt: skip
            )
        for option in ("ram", "dape"):
            path = getattr(options, option)
            if path.is_file():
                checks.append(Check(who, f"{option} weights {path}", "present"))
            else:
                checks.append(
                    Check(
                        who,
                        f"{option} weights {path}",
                        "missing",
                        problem="does not exist",
                        fix="the file is linked from the DP²O-SR repository's README",
                    )  # fmt: skip
                )
        local = Path(options.tokenizer).expanduser()
        if not local.exists():
            checks.append(cached_or_hub_check(who, options.tokenizer, ("vocab.txt",), local="tokenizer"))
        elif (local / "vocab.txt").is_file():
            checks.append(Check(who, f"tokenizer {local}", "present"))
        else:
            checks.append(Check(who, f"tokenizer {local}", "missing", problem="has no vocab.txt"))
        return checks

    def prompts(self, lr: Sequence, given: Sequence[str | None]) -> list[str]:
        """The tags of each LR image, from the worker."""
        from dp2o_plugins.rewards.worker_client import show_reply

        worker = self._started()
        reply, _ = worker.call({"op": "tag", "count": len(lr)}, list(lr), results=0)
        tags = reply.get("tags")
        if not isinstance(tags, list) or len(tags) != len(lr) or not all(isinstance(t, str) for t in tags):
            raise worker.failure(
                f"answered {len(lr)} images with {show_reply(tags)} (one text per image expected)"
            )
        return tags

    def _started(self) -> Any:
        """The worker, started and its model built on first use."""
        if self._worker is None:
            from dp2o_plugins.rewards.pyiqa_metric import resolve_device
            from dp2o_plugins.rewards.worker_client import WorkerProcess

            o = self.options
            python = o.python or Path(sys.executable)
            worker = WorkerProcess(
                python,
                WORKER_SCRIPT,
                f"prompter {self.name!r}",
                timeout=o.timeout,
                hint="check the python option",
            )
            request = {
                "op": "create", "code": str(o.code), "ram": str(o.ram), "dape": str(o.dape),
                "tokenizer": str(o.tokenizer), "device": resolve_device(o.device),
            }  # fmt: skip
            worker.call(request, [], results=0)
            self._worker = worker
        return self._worker


def _interpreter_check(who: str, python: Path, code: Path) -> Any:
    """Whether ``python`` imports the tagger's code from ``code``; else the error it gives."""
    from dp2o_core.preflight import Check

    item = f"interpreter {python} importing ram"
    try:
        done = subprocess.run(
            [str(python), "-c", _IMPORT_PROBE, str(code)], capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return Check(who, item, "missing", problem=f"cannot run it ({error})", fix="check the python option")
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return Check(
            who,
            item,
            "missing",
            problem=lines[-1] if lines else f"status {done.returncode}",
            fix=_ENVIRONMENT_FIX,
        )
    return Check(who, item, "present")
