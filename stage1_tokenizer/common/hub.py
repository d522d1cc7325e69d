"""Telling a local path from a Hub name before any network wait: a string that names no folder
here, when the Hub cannot be reached, is refused at once with what does exist nearby, instead of
after twenty seconds of retried lookups."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection (False at once in offline mode)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def nearby(path: str | os.PathLike, limit: int = 8) -> str:
    """What exists where `path` points: the entries of its nearest existing parent."""
    parent = Path(path).expanduser()
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    parent = parent if parent.exists() else Path(".")
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in parent.iterdir() if not p.name.startswith("."))[:limit]
    return f"{parent}/ holds {', '.join(entries) if entries else 'nothing'}"


def _in_hub_cache(name: str) -> bool:
    """Whether the local Hub cache holds a model or dataset repo of this name (usable offline)."""
    from huggingface_hub import constants

    folder = name.replace("/", "--")
    return any((Path(constants.HF_HUB_CACHE) / f"{kind}--{folder}").is_dir() for kind in ("models", "datasets"))


def check_local_or_hub(name: str, what: str) -> None:
    """Refuses `name` at once when it is no local path and the Hub cannot be reached (a typo in a
    local path, most likely). `what` names the argument in the message."""
    from huggingface_hub import constants

    if Path(name).expanduser().exists() or _in_hub_cache(name) or constants.HF_HUB_OFFLINE or hub_reachable():
        return  # offline mode: the libraries read their cache and say themselves what is missing
    raise FileNotFoundError(
        f"{what}={name!r} is no file or folder here, and the Hugging Face Hub cannot be reached to look it up: "
        f"if it is a local path, check it ({nearby(name)})."
    )
