"""Whether the built-in plugins may reach the internet (model and weight downloads).

``HF_HUB_OFFLINE=1`` or ``DP2O_OFFLINE=1`` means never; otherwise the Hugging Face hub is
tried once per process (three seconds at most) and the answer kept.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any


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
    if offline():
        yield True
        return
    if _hub_reachable(host, timeout):
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
    return not offline() and _hub_reachable()


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether ``host`` accepts a connection; asked once per process."""
    global _reachable
    if _reachable is None:
        import socket

        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            _reachable = True
        except OSError:
            _reachable = False
    return _reachable


def availability(
    who: str,
    item: str,
    *,
    found: bool,
    source: str,
    size: Callable[[], int | None],
    problem: str,
    fix: str,
) -> Any:
    """The readiness :class:`~dp2o_core.preflight.Check` of something downloadable: present
    when ``found`` here, else fetched on first use when online (``size()`` asked then), else
    missing with ``problem`` and ``fix``."""
    from dp2o_core.preflight import Check

    if found:
        return Check(who, item, "present", source=source)
    if online():
        return Check(who, item, "download", source=source, size=size())
    return Check(who, item, "missing", problem=problem, fix=fix, source=source)


def remote_size(url: str) -> int | None:
    """The Content-Length of ``url`` (a HEAD request, three seconds at most), or None."""
    import urllib.request

    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=3) as response:
            length = response.headers.get("Content-Length")
        return int(length) if length else None
    except Exception:  # noqa: BLE001 - the size is a courtesy; no answer means unknown
        return None


def hub_size(repo: str) -> int | None:
    """The total size of a Hugging Face repository's files (one API call), or None."""
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(repo, files_metadata=True, timeout=5)
        return sum(int(f.size or 0) for f in info.siblings or []) or None
    except Exception:  # noqa: BLE001 - the size is a courtesy; no answer means unknown
        return None
