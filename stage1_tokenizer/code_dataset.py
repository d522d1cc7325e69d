"""The code dataset: what stage one writes (`python -m stage1_tokenizer.encode`) and stage two
trains on. Its format lives here, and only here; both stages import it.

Layout of a code dataset folder:
- `shards/shard-00000.arrow`, ...: Arrow stream files (`datasets`' ArrowWriter), which read in
  order hold the rows in the order of the encoded data. One column per level, `codes_0` (top
  level) ... `codes_{L-1}` (bottom), each row an (h, w) array of codes (audio: a list of the
  utterance's codes, as many as it is long) in the smallest unsigned type that holds the codebook
  (uint8 up to K=256, uint16 up to 65536), plus `label` (int64) when the source has labels
  (audio: the speaker id);
- `code_dataset.json`: the tokenizer's fingerprint (`tokenizer_fingerprint`), its code grids
  (audio: samples per code), codebook size, number of levels, the labels' names (audio: speaker
  names), the number of examples, the source dataset's name, the shard files in order and how
  many unusable input files were skipped.

`load_code_dataset(path, tokenizer)` refuses codes whose fingerprint is not the tokenizer's.
`CodeDataset` and `SequenceWindows` are the training items of one level, read lazily from the
memory-mapped Arrow files, so that nothing before the first step grows with the dataset.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
from torch.utils.data import Dataset

from .common.epoch_random import EpochRandomness
from .common.files import CODE_DATASET_METADATA
from .common.recipes import config_values

METADATA_FILE = CODE_DATASET_METADATA
SHARDS = "shards"  # the folder of the Arrow files, shard-00000.arrow, ... in row order
# Buffers that only steer training (usage counters, EMA statistics, the annealing step): they do
# not change which codes an input gets, so they stay out of the fingerprint.
_TRAINING_ONLY = ("steps_unused", "initialized", "ema_count", "ema_sum", ".step")


def tokenizer_fingerprint(model) -> str:
    """SHA-256 of a tokenizer's own config fields and of the weights that decide its codes: equal
    for the same trained tokenizer wherever it was loaded from, different after any training step."""
    digest = hashlib.sha256(json.dumps(config_values(model.config), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        if name.endswith(_TRAINING_ONLY):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def code_dtype(codebook_size: int) -> type:
    """The smallest unsigned integer type that holds codes 0..codebook_size-1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if codebook_size - 1 <= np.iinfo(dtype).max:
            return dtype
    raise ValueError(f"codebook_size {codebook_size} does not fit in 32 bits.")


def code_dataset_metadata(model, num_examples: int, id2label=None, source: str | None = None) -> dict:
    """What `code_dataset.json` records about the codes of `model` (a tokenizer or a latent VQ-VAE)."""
    config = model.config
    audio = getattr(config, "modality", None) == "audio"
    return {
        "tokenizer_fingerprint": tokenizer_fingerprint(model),
        "modality": getattr(config, "modality", "codes"),  # "codes": a latent VQ-VAE's, over another's codes
        "code_grids": None if audio else [list(grid) for grid in config.code_grids],
        "code_strides": getattr(config, "code_strides", None),
        "codebook_size": config.codebook_size,
        "num_levels": config.num_levels,
        "id2label": {int(k): v for k, v in (id2label or {}).items()},
        "num_examples": num_examples,
        "dataset": source,
    }


def load_code_dataset(path: str | Path, tokenizer=None) -> tuple[datasets.Dataset, dict]:
    """(codes, metadata); with `tokenizer`, refuses codes another tokenizer made."""
    path = Path(path)
    if not (path / METADATA_FILE).is_file():
        raise FileNotFoundError(
            f"{path} is not a code dataset (no {METADATA_FILE}); make one with `python -m stage1_tokenizer.encode`."
        )
    metadata = json.loads((path / METADATA_FILE).read_text())
    if tokenizer is not None:
        expected = tokenizer_fingerprint(tokenizer)
        if metadata["tokenizer_fingerprint"] != expected:
            raise ValueError(
                f"the codes in {path} were made by tokenizer {metadata['tokenizer_fingerprint'][:12]}, but the "
                f"paired tokenizer is {expected[:12]}: re-encode the data with this tokenizer "
                "(python -m stage1_tokenizer.encode) or pair the codes with the tokenizer that made them."
            )
    if "shards" not in metadata:  # written by vqgen before shards: a save_to_disk folder
        return datasets.load_from_disk(str(path)), metadata
    missing = [name for name in metadata["shards"] if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"the code dataset {path} is incomplete: {missing[0]} is missing; encode it again.")
    shards = [datasets.Dataset.from_file(str(path / name)) for name in metadata["shards"]]  # memory-mapped
    return (shards[0] if len(shards) == 1 else datasets.concatenate_datasets(shards)), metadata


def _column(codes: datasets.Dataset, name: str):
    """One column of every row as Arrow data, memory-mapped (no Python objects per row)."""
    return codes.select_columns([name]).with_format("arrow")[:][name]


def _limited(codes: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    return codes if limit is None or limit >= len(codes) else codes.select(range(limit))


class CodeDataset(Dataset):
    """The codes of one level as training items {"codes": (h, w), "context": the level above's
    codes (a lower level only), "label": int (`conditional` only)}, read from the Arrow files on
    access (batched through `__getitems__`, as DataLoaders fetch)."""

    def __init__(self, codes: datasets.Dataset, level: int, conditional: bool, limit: int | None = None):
        self.level, self.conditional = level, conditional
        columns = [f"codes_{level}"] + ([f"codes_{level - 1}"] if level > 0 else []) + (["label"] if conditional else [])
        missing = [name for name in columns if name not in codes.column_names]
        if missing:
            raise ValueError(f"the code dataset has no column(s) {missing}; its columns are {codes.column_names}.")
        self.table = _limited(codes, limit).with_format("torch", columns=columns)

    def __len__(self) -> int:
        return len(self.table)

    def _items(self, rows: dict) -> list[dict]:
        codes = rows[f"codes_{self.level}"].long()
        items = [{"codes": c} for c in codes]
        if self.level > 0:
            for item, context in zip(items, rows[f"codes_{self.level - 1}"].long()):
                item["context"] = context
        if self.conditional:
            for item, label in zip(items, rows["label"].long()):
                item["label"] = label
        return items

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        return self._items(self.table[list(indices)])

    @property
    def labels(self) -> torch.Tensor | None:
        """Every example's label (LongTensor (N,)), or None for an unconditional dataset."""
        return torch.from_numpy(_column(self.table, "label").to_numpy().astype(np.int64)) if self.conditional else None

    def contexts(self, indices) -> torch.Tensor:
        """The level above's codes of the given examples (LongTensor (n, *grid))."""
        return self.table[list(indices)][f"codes_{self.level - 1}"].long()


class SequenceWindows(Dataset):
    """Windows of `length` codes out of code sequences of any length (speech: one per utterance),
    as CodeDataset items. Training windows start at random, drawn from (seed, epoch, index)
    (`EpochRandomness`; the training loop calls `set_epoch`); held-out ones are each sequence's middle. A lower level's window starts at an even
    code, under the `length // 2` codes of the level above that form its context. Sequences
    shorter than a window are left out (their lengths come from the Arrow column, not a pass)."""

    def __init__(
        self, codes: datasets.Dataset, level: int, conditional: bool, length: int, random: bool, limit: int | None = None, seed: int = 0
    ):
        if length < 2 or (level > 0 and length % 2):
            raise ValueError(f"--code_length must be at least 2 (and even for a lower level), got {length}.")
        codes = _limited(codes, limit)
        lengths = np.asarray(pc.list_value_length(_column(codes, f"codes_{level}")))
        self.rows = np.flatnonzero(lengths >= length)
        if not len(self.rows):
            longest = int(lengths.max()) if len(lengths) else 0
            raise ValueError(f"no code sequence is as long as --code_length {length} (the longest has {longest}); lower it.")
        columns = [f"codes_{level}"] + ([f"codes_{level - 1}"] if level > 0 else []) + (["label"] if conditional else [])
        self.table = codes.with_format("numpy", columns=columns)
        self.level, self.conditional = level, conditional
        self.length, self.random, self.skipped = length, random, len(lengths) - len(self.rows)
        self.randomness = EpochRandomness(seed)

    def set_epoch(self, epoch: int) -> None:
        self.randomness.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.table[int(self.rows[i])]
        sequence, stride = row[f"codes_{self.level}"], 2 if self.level > 0 else 1
        room = (len(sequence) - self.length) // stride
        start = stride * (self.randomness.randint(room + 1, i) if self.random else room // 2)
        item = {"codes": torch.as_tensor(sequence[start : start + self.length], dtype=torch.long)}
        if self.level > 0:
            context = row[f"codes_{self.level - 1}"][start // 2 : (start + self.length) // 2]
            item["context"] = torch.as_tensor(context, dtype=torch.long)
        if self.conditional:
            item["label"] = torch.as_tensor(row["label"], dtype=torch.long)
        return item

    @property
    def labels(self) -> torch.Tensor | None:
        if not self.conditional:
            return None
        return torch.from_numpy(_column(self.table, "label").to_numpy().astype(np.int64)[self.rows])
