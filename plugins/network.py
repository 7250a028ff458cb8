"""Whether the built-in plugins may reach the internet (model and weight downloads).

``HF_HUB_OFFLINE=1`` or ``DP2O_OFFLINE=1`` means never; otherwise the Hugging Face hub is
tried once per process (three seconds at most) and the answer kept.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def offline() -> bool:
    """True when dp2o must not try to download anything."""
    return any(
        os.environ.get(name, "").strip() not in ("", "0") for name in ("HF_HUB_OFFLINE", "DP2O_OFFLINE")
    )


_reachable: bool | None = None


@contextlib.contextmanager
def offline_unless_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> Iterator[bool]:
    """Inside the block, be offline when ``host`` cannot be reached; yields whether it is.

    Without it every metric whose weights are missing spends about a minute in the Hugging
    Face client's retries before failing; with it a missing file fails at once, with the
    message that says where to put it. Reachability is checked once per process; the
    environment and the hub client's setting are restored on exit.
    """
    global _reachable
    if offline():
        yield True
        return
    if _reachable is None:
        import socket

        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            _reachable = True
        except OSError:
            _reachable = False
    if _reachable:
        yield False
        return
    import huggingface_hub.constants as hub

    saved = os.environ.get("DP2O_OFFLINE"), hub.HF_HUB_OFFLINE
    os.environ["DP2O_OFFLINE"] = "1"
    hub.HF_HUB_OFFLINE = True  # the hub client reads HF_HUB_OFFLINE at import time
    try:
        yield True
    finally:
        if saved[0] is None:
            os.environ.pop("DP2O_OFFLINE", None)
        else:
            os.environ["DP2O_OFFLINE"] = saved[0]
        hub.HF_HUB_OFFLINE = saved[1]


def online() -> bool:
    """True when downloads may be tried and the hub answered (checked once per process)."""
    if offline():
        return False
    with offline_unless_reachable() as is_offline:
        return not is_offline


def hub_size(repo: str) -> int | None:
    """The total size of a Hugging Face repository's files (one API call), or None."""
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(repo, files_metadata=True, timeout=5)
        return sum(int(f.size or 0) for f in info.siblings or []) or None
    except Exception:  # noqa: BLE001 - the size is a courtesy; no answer means unknown
        return None
