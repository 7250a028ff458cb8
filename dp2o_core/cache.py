"""dp2o's cache folder: files dp2o derives once and may rebuild at any time."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$DP2O_CACHE``, else ``$XDG_CACHE_HOME/dp2o``, else ``~/.cache/dp2o``."""
    if os.environ.get("DP2O_CACHE"):
        return Path(os.environ["DP2O_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return base / "dp2o"
