"""What `ImageDataset` and `AudioDataset` share: the rows of a `datasets.Dataset` whose media
column holds files (`{"bytes", "path"}`), decoded when an item is read, never in the constructor,
so that building a dataset costs the same for a hundred files as for a million, in every process.

One policy for files that cannot be used (unreadable, truncated, empty, silent), met where they are
read:
- `on_bad_file="raise"`: `BadFileError` (a ValueError) naming the row, the file and the fix;
- `on_bad_file="skip"`: the next usable row takes the bad row's place, so a batch stays full and
  the data order stays a function of the seed; each item says in `"bad_files_skipped"` how many
  rows it skipped, which the training loop sums over processes into its logs and
  `trainer_state.json`.

A setting that does not fit the data (a color image for a gray model, stereo for a mono one) is
not a bad file: it raises under either policy. `python -m stage1_tokenizer.data.check` reads a
whole dataset once, with worker processes, and caches the list of bad rows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import torch

BAD_FILE_POLICIES = ("raise", "skip")
SKIPPED = "bad_files_skipped"  # the item field that counts skipped rows


def folder_dataset(root: Path, extensions: list[str], feature: type, media_column: str, label_column: str, what: str) -> datasets.Dataset:
    """The files of a folder as a `datasets.Dataset` of paths (`feature(decode=False)`), labelled by
    their top-level subfolder (`root/cat/1.png` -> "cat", a `ClassLabel`) unless every file sits in
    `root` itself. One walk of the tree, no stat per file, in sorted order: `datasets`'
    "imagefolder" resolves its dozens of file patterns by walking the tree once per pattern, a
    start-up that grows with the folder. Hidden files and folders (".*", "__*") are skipped, as there.
    `what` names the files in messages ("image", "audio")."""
    files = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith((".", "__"))]
        files += [os.path.join(folder, name) for name in names if not name.startswith((".", "__")) and os.path.splitext(name)[1].lower() in extensions]
    if not files:
        raise FileNotFoundError(
            f"{what} folder {root} holds no {what} files (looked for {', '.join(extensions)}). Put the files in "
            f"one subfolder per label, e.g. {root}/cat/1{extensions[0]}."
        )
    files.sort()
    top = str(root) + os.sep
    relative = [path[len(top) :] for path in files]
    top_level = [path for path in relative if os.sep not in path]
    if top_level and len(top_level) < len(files):
        nested = next(path for path in relative if os.sep in path)
        raise ValueError(
            f"{what} folder {root} mixes files at its top level ({top_level[0]}) with files in subfolders ({nested}). "
            "Move every file into its label's subfolder, or keep them all at the top level for a dataset without labels."
        )
    columns: dict[str, list[str]] = {media_column: files}
    features = {media_column: feature(decode=False)}
    if not top_level:
        columns[label_column] = [path.split(os.sep, 1)[0] for path in relative]
        features[label_column] = datasets.ClassLabel(names=sorted(set(columns[label_column])))
    hf_dataset = datasets.Dataset.from_dict(columns)
    # Casting converts the stored strings, where from_dict(features=...) would encode each file (audio through torchcodec).
    for column, kind in features.items():
        hf_dataset = hf_dataset.cast_column(column, kind)
    return hf_dataset


class BadFileError(ValueError):
    """A file that cannot be used as data: unreadable, truncated, empty or silent."""


class SettingMismatch(ValueError):
    """Data that do not fit the settings (channels): a setting to change, not a bad file, so it
    raises under any `on_bad_file` policy."""


class MediaDataset(torch.utils.data.Dataset):
    """Subclasses set `media_column`, `self._rows` (the dataset with that column cast to
    `decode=False`) and implement `_load(row_index, row) -> item`, raising `BadFileError` for a
    file that cannot be used."""

    kind = "file"  # how messages name one item: "image", "audio file"
    decodes_files = True  # the training loop gives such datasets DataLoader workers by default

    def __init__(self, hf_dataset: datasets.Dataset, media_column: str, feature: type, columns: list[str], on_bad_file: str):
        if on_bad_file not in BAD_FILE_POLICIES:
            raise ValueError(f"on_bad_file must be one of {BAD_FILE_POLICIES}, got {on_bad_file!r}.")
        self.on_bad_file = on_bad_file
        self.media_column = media_column
        self._rows = hf_dataset.select_columns(columns).cast_column(media_column, feature(decode=False))
        self._known_bad = self._read_check()

    @property
    def fingerprint(self) -> str | None:
        """The `datasets` fingerprint of the rows read (files and labels); None for a stream."""
        return getattr(self._rows, "_fingerprint", None)

    def _read_check(self) -> frozenset[int]:
        """The rows a cached `python -m stage1_tokenizer.data.check` found unusable (none if never run)."""
        import json

        from .cache import cache_root

        if self.fingerprint is None:
            return frozenset()
        path = cache_root() / "checks" / f"{self.fingerprint}.json"
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            return frozenset()
        return frozenset(row for row, _ in result.get("bad_rows", [])) if result.get("num_rows") == len(self._rows) else frozenset()

    def __len__(self) -> int:
        return len(self._rows)

    def describe(self, row_index: int, value: Mapping[str, Any] | None = None) -> str:
        """How errors name a row: its index and, when known, its file."""
        if value is None:
            value = self._rows[row_index][self.media_column]
        path = value.get("path") if isinstance(value, Mapping) else None
        return f"{self.kind} {row_index} ({path})" if path else f"{self.kind} {row_index}"

    def _load(self, row_index: int, row: dict) -> dict:
        raise NotImplementedError

    def load(self, row_index: int) -> dict:
        """Row `row_index` as an item; BadFileError if its file cannot be used."""
        return self._load(row_index, self._rows[row_index])

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} {self.kind}s.")
        index %= len(self)
        if self.on_bad_file == "raise":
            try:
                item = self.load(index)
            except BadFileError as error:
                raise BadFileError(f"{error} Or pass on_bad_file='skip' (--on_bad_file skip) to skip unusable files.") from error
            item[SKIPPED] = torch.tensor(0)
            return item
        for skipped in range(len(self)):  # the next usable row, wrapping around
            row = (index + skipped) % len(self)
            if row in self._known_bad:  # found by a cached check: no need to try it
                continue
            try:
                item = self.load(row)
            except BadFileError:
                continue
            item[SKIPPED] = torch.tensor(skipped)
            return item
        raise BadFileError(f"none of the {len(self)} {self.kind}s of this dataset can be used; the first: {self.describe(index)}.")


class StreamedMedia(torch.utils.data.IterableDataset):
    """The items of a streamed dataset (a `datasets.IterableDataset`, already split by node and
    shuffled), decoded one by one by `decoder`, an ImageDataset or AudioDataset built on the
    stream. An unusable file is skipped (the next one fills the batch) and counted, or raises, as
    `decoder.on_bad_file` says. `state_dict` / `load_state_dict` are the stream's own, so a
    StatefulDataLoader resumes at the same position; `set_epoch` reshuffles."""

    decodes_files = True

    def __init__(self, decoder: MediaDataset):
        self.decoder, self.stream = decoder, decoder._rows

    def __iter__(self):
        skipped = 0
        for position, row in enumerate(self.stream):
            try:
                item = self.decoder._load(position, row)
            except BadFileError as error:
                if self.decoder.on_bad_file == "raise":
                    raise BadFileError(f"{error} Or pass --on_bad_file skip to skip unusable files.") from error
                skipped += 1
                continue
            item[SKIPPED] = torch.tensor(skipped)
            skipped = 0
            yield item

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)
