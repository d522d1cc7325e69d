"""The cache of the built-in corpora that are made on first use (the espeak-ng speech corpus,
the ViZDoom frames): where it lives, how an entry is named, and how it is written.

- `cache_root()`: `$VQGEN_CACHE`, else `~/.cache/vqgen`.
- `settings_key(settings)`: a short hash of the settings an entry was made with; entries of other
  settings never pass for each other.
- `cache_entry(path)`: build an entry (a file or a folder) under a private temporary name that is
  renamed when complete, so an interrupted build leaves nothing that passes for a finished entry;
  when another process (a second rank, say) finishes the same entry first, theirs is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("VQGEN_CACHE", "~/.cache/vqgen")).expanduser()


def settings_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def cache_entry(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside `path` for the caller to create (a file or a folder) and
    renames it to `path` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of our own rather than mkstemp's, whose files only their owner may read.
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError:
            if not path.exists():  # not a lost race with a process making the same entry
                raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
