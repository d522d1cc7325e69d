"""Writing files and folders so that nothing is half-written and nothing of the user's is lost.

- `atomic_file(path)`: write to a temporary name beside `path`, renamed into place when the block
  ends; an error or a kill leaves no half-written `path`.
- `atomic_directory(path)`: the same for a whole folder. The rename is the commit point. A folder
  already at `path` is replaced only if vqgen wrote it (`is_vqgen_output`), or with
  `overwrite=True`; anything else is refused, naming the folder, before a byte is written.
- `check_output_dir(path, overwrite)`: that refusal on its own, for commands to call before any
  work starts.
- `write_report(path, text, details)`: a benchmark's markdown table at `path` and its figures as
  JSON beside it (`path` with `.json`), both atomic.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

# What vqgen writes, recognised by its own metadata: a model or bundle folder (`config.json` of a
# vqgen model type), a code dataset, a checkpoint, a training run's folder.
CODE_DATASET_METADATA = "code_dataset.json"
TRAINER_STATE = "trainer_state.json"
RUN_MARKER = "vqgen_run.json"


def is_vqgen_output(path: str | os.PathLike) -> bool:
    """True for a folder vqgen wrote (judged by its metadata, never by its name)."""
    path = Path(path)
    if (path / CODE_DATASET_METADATA).is_file() or (path / TRAINER_STATE).is_file() or (path / RUN_MARKER).is_file():
        return True
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type", "")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(model_type, str) and model_type.startswith("vqgen-")


def check_output_dir(path: str | os.PathLike, overwrite: bool = False, flag: str = "--overwrite_output_dir") -> Path:
    """Refuses, before any work, a destination that vqgen could not write: a file, a folder it
    cannot write into, or a non-empty folder that vqgen did not write (unless `overwrite`)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"the output folder {path} is a file: pass another path, or move the file away.")
    if path.is_dir() and any(path.iterdir()) and not overwrite and not is_vqgen_output(path):
        raise FileExistsError(
            f"the output folder {path} already holds files that vqgen did not write; pass an empty or new folder, "
            f"or {flag} to replace it."
        )
    parent = path if path.is_dir() else next((p for p in path.parents if p.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write into {parent} (for the output folder {path}): pass a writable path.")
    return path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write to; renames it to `path` when the block ends
    without error, and removes it otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_report(path: str | os.PathLike, text: str, details: dict) -> Path:
    """A benchmark's table (markdown) at `path` and `details` as JSON beside it."""
    path = Path(path)
    write_text_atomic(path.with_suffix(".json"), json.dumps(details, indent=1))
    return write_text_atomic(path, text)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yields an empty temporary folder beside `path`; when the block ends without error it
    replaces `path` (if vqgen wrote what is there, or `overwrite`), else it is removed."""
    path = Path(path)
    check_output_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        publish_directory(tmp, path, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename


def publish_directory(tmp: str | os.PathLike, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Moves the completely written folder `tmp` to `path`, replacing a folder there only if
    vqgen wrote it (or `overwrite`). The rename is the commit point."""
    tmp, path = Path(tmp), Path(path)
    if path.exists():
        check_output_dir(path, overwrite)  # what is there may have changed while we worked
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path
