"""Creating pyiqa metrics with weights that may have to come from a folder, not the internet.

pyiqa fetches its own weight files into ``$TORCH_HOME/hub/pyiqa/`` and backbone weights
into ``$TORCH_HOME/hub/checkpoints/`` (torchvision) or the Hugging Face cache (timm).
While a metric is created, every download goes through :func:`_fetch`, which first looks
for the file by name in the weights folder (``--weights-dir`` / ``weights_dir`` option,
or ``DP2O_IQA_WEIGHTS``) and links it into place. A file found nowhere is downloaded —
unless ``HF_HUB_OFFLINE=1`` or ``DP2O_OFFLINE=1`` — and a failed download becomes one
:class:`MissingWeightsError` naming the metric, the file and where to put it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dp2o_plugins.network import offline

from dp2o_core.errors import Dp2oError

WEIGHTS_ENV = "DP2O_IQA_WEIGHTS"


class MissingWeightsError(Dp2oError):
    """A metric's weight file is neither on disk nor downloadable."""

    def __init__(self, metric: str, filename: str, url: str, places: list[Path], cause: str) -> None:
        self.metric, self.filename, self.url = metric, filename, url
        where = " or ".join(str(p) for p in places)
        super().__init__(
            f"metric {metric!r} needs the weight file {filename!r} and it could not be fetched ({cause}). "
            f"On a machine with internet download {url} and put it in {where} "
            f"(choose the folder with --weights-dir or {WEIGHTS_ENV})."
        )


def weights_dirs(weights_dir: Path | None) -> list[Path]:
    """Folders searched for weight files by name, in order."""
    folders = []
    if weights_dir is not None:
        folders.append(Path(weights_dir).expanduser())
    if os.environ.get(WEIGHTS_ENV):
        folders.append(Path(os.environ[WEIGHTS_ENV]).expanduser())
    return folders


def pyiqa_cache_dir() -> Path:
    """pyiqa's own weight folder (``$TORCH_HOME/hub/pyiqa``)."""
    import torch

    return Path(torch.hub.get_dir()) / "pyiqa"


@contextlib.contextmanager
def _intercept_downloads(metric: str, folders: list[Path]) -> Iterator[None]:
    import torch.hub
    from pyiqa.utils import download_util

    original = torch.hub.download_url_to_file

    def fetch(url: str, dst: str, *args: Any, **kwargs: Any) -> None:
        filename = Path(dst).name
        for folder in folders:
            candidate = folder / filename
            if candidate.is_file():
                Path(dst).parent.mkdir(parents=True, exist_ok=True)
                if os.path.islink(dst):  # a link left to a weights folder that has since moved
                    os.unlink(dst)
                try:
                    os.symlink(candidate.resolve(), dst)
                except OSError:
                    shutil.copyfile(candidate, dst)
                return
        places = [*folders, Path(dst).parent]
        if offline():
            raise MissingWeightsError(metric, filename, url, places, "offline mode is on")
        try:
            original(url, dst, *args, **kwargs)
        except Exception as error:  # noqa: BLE001 - every download failure means the same to the user
            raise MissingWeightsError(metric, filename, url, places, _short(error)) from None

    torch.hub.download_url_to_file = fetch
    download_util.download_url_to_file = fetch
    try:
        yield
    finally:
        torch.hub.download_url_to_file = original
        download_util.download_url_to_file = original


def create_metric(name: str, device: str, weights: Path | None, folders: list[Path], kwargs: dict[str, Any]):
    """``pyiqa.create_metric`` with local weight folders and errors a person can act on."""
    import pyiqa

    options = dict(kwargs)
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise Dp2oError(f"weights file {path} for metric {name!r} does not exist (option weights)")
        options["pretrained_model_path"] = str(path)
    try:
        with _intercept_downloads(name, folders):
            return pyiqa.create_metric(name, device=device, **options)
    except MissingWeightsError:
        raise
    except TypeError as error:
        raise Dp2oError(f"metric {name!r} does not accept these options {sorted(options)}: {error}") from None
    except Exception as error:
        if _looks_like_network(error):
            raise Dp2oError(
                f"metric {name!r} needs backbone weights that are not cached and could not be downloaded "
                f"({_short(error)}). Copy them from a machine with internet into the torchvision cache "
                "$TORCH_HOME/hub/checkpoints/ or the Hugging Face cache ($HF_HOME), then HF_HUB_OFFLINE=1."
            ) from None
        raise


def _looks_like_network(error: BaseException) -> bool:
    text = f"{type(error).__module__}.{type(error).__name__}: {error}"
    markers = (
        "URLError",
        "ConnectionError",
        "name resolution",
        "LocalEntryNotFound",
        "OfflineMode",
        "huggingface_hub",
        "Max retries",
        "gaierror",
        "HTTPError",
    )
    return any(marker in text for marker in markers)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:200]}"
