"""Per-image prompts from sidecar files.

Two sources, the second winning where both give a prompt:

* a prompts file (option ``prompts``): ``.csv`` with a header holding ``file`` (or
  ``id``) and ``prompt`` (or ``text``/``caption``) columns; ``.jsonl`` with one object per
  line using the same keys; ``.txt`` with one ``file<TAB>prompt`` line per image;
* a text file beside the image with the same stem (``0001.png`` → ``0001.txt``).

``file`` is the image's path relative to the data set folder (with or without suffix) or
its bare file name.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from dp2o_core.errors import UsageError

FILE_KEYS = ("file", "id", "image", "path")
PROMPT_KEYS = ("prompt", "text", "caption")


def load_prompt_table(path: Path) -> dict[str, str]:
    """Read a prompts file into {file key: prompt}; keys are normalised by :func:`prompt_keys`."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot read prompts file {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise UsageError(
            f"prompts file {path} is not UTF-8 text (byte {error.start}); save it as UTF-8"
        ) from None
    rows: list[dict[str, str]] = []
    if suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    elif suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as error:
                    raise UsageError(f"prompts file {path}, line {number}: not JSON ({error})") from None
                if not isinstance(row, dict):
                    raise UsageError(
                        f'prompts file {path}, line {number}: expected an object like {{"file": ..., '
                        f'"prompt": ...}}, got {type(row).__name__}'
                    )
                rows.append(row)
    elif suffix == ".txt":
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                if "\t" not in line:
                    raise UsageError(f"prompts file {path}, line {number}: expected 'file<TAB>prompt'")
                name, text_of_line = line.split("\t", 1)
                rows.append({"file": name, "prompt": text_of_line})
    else:
        raise UsageError(f"prompts file {path} must be .csv, .jsonl or .txt")
    table: dict[str, str] = {}
    for number, row in enumerate(rows, 1):
        file = next((str(row[k]) for k in FILE_KEYS if row.get(k) not in (None, "")), None)
        prompt = next((str(row[k]) for k in PROMPT_KEYS if row.get(k) is not None), None)
        if file is None or prompt is None:
            raise UsageError(
                f"prompts file {path}, entry {number}: needs a {'/'.join(FILE_KEYS)} and a "
                f"{'/'.join(PROMPT_KEYS)} field"
            )
        table[_normalise(file)] = prompt.strip()
    return table


def prompt_for(image: Path, root: Path, table: dict[str, str]) -> str | None:
    """The prompt of ``image``: its sidecar ``.txt``, else the prompts table, else None."""
    sidecar = image.with_suffix(".txt")
    if sidecar.is_file():
        try:
            return sidecar.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError as error:
            raise UsageError(
                f"prompt file {sidecar} is not UTF-8 text (byte {error.start}); save it as UTF-8"
            ) from None
        except OSError as error:
            raise UsageError(f"cannot read prompt file {sidecar}: {error.strerror or error}") from None
    for key in prompt_keys(image, root):
        if key in table:
            return table[key]
    return None


def prompt_keys(image: Path, root: Path) -> list[str]:
    """The keys under which a prompts table may name ``image``."""
    relative = image.relative_to(root).as_posix()
    return [
        _normalise(relative),
        _normalise(str(Path(relative).with_suffix(""))),
        _normalise(image.name),
        _normalise(image.stem),
    ]


def _normalise(key: str) -> str:
    return key.strip().replace("\\", "/").lstrip("./")
