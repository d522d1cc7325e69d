"""Fashion-MNIST (Xiao et al. 2017) read from the idx files of Debian's `dataset-fashion-mnist`.

70,000 labelled 28x28 grayscale images, offline: `scripts/setup.sh` installs the package.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import torch
import torch.utils.data

DEFAULT_ROOT = Path(os.environ.get("VQGEN_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_LABELS = [
    "T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
]  # fmt: skip
_FILES = {"train": "train", "test": "t10k"}


def _read_idx(path: Path, expected_dims: int) -> torch.Tensor:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file (header {data[:4]!r}).")
    dims = data[3]
    if dims != expected_dims:
        raise ValueError(f"{path} has {dims} dimensions, expected {expected_dims}.")
    shape = struct.unpack(f">{dims}I", data[4 : 4 + 4 * dims])
    body = data[4 + 4 * dims :]
    count = 1
    for size in shape:
        count *= size
    if len(body) != count:
        raise ValueError(f"{path} is truncated: header promises {count} bytes, file holds {len(body)}.")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def load_fashion_mnist(split: str = "train", root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns `(images, labels)`: float images in [0, 1] shaped (N, 1, 28, 28) and int64 labels."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    root = Path(root) if root is not None else DEFAULT_ROOT
    stem = _FILES[split]
    paths = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        candidates = [root / f"{stem}-{kind}.gz", root / f"{stem}-{kind}"]
        found = next((p for p in candidates if p.exists()), None)
        if found is None:
            raise FileNotFoundError(
                f"Fashion-MNIST {split} file {candidates[0].name} not found in {root}. Install it with "
                "`apt-get install dataset-fashion-mnist` (scripts/setup.sh does), or point "
                "VQGEN_FASHION_MNIST at a folder holding the idx files."
            )
        paths.append(found)
    images = _read_idx(paths[0], 3)
    labels = _read_idx(paths[1], 1)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{paths[0]} holds {images.shape[0]} images but {paths[1]} {labels.shape[0]} labels.")
    return images[:, None].float() / 255.0, labels.long()


class FashionMNIST(torch.utils.data.Dataset):
    """Fashion-MNIST as a map-style dataset of `{"pixel_values": (1, 28, 28) in [0, 1], "label"}`."""

    def __init__(self, split: str = "train", root: str | Path | None = None, limit: int | None = None):
        self.images, self.labels = load_fashion_mnist(split, root)
        if limit is not None:
            self.images, self.labels = self.images[:limit], self.labels[:limit]
        self.id2label = dict(enumerate(FASHION_MNIST_LABELS))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"pixel_values": self.images[index], "label": self.labels[index]}
