"""Image sources for stage one: Hugging Face image datasets and local image folders.

Every source yields `{"pixel_values": FloatTensor (channels, image_size, image_size) in [0, 1],
"label": LongTensor scalar}` (label -1 when the source has none), which is what `VQVAEModel`
takes once batched; `ImageDataset` adds `"bad_files_skipped"` (see `media.py`).

- `ImageDataset` wraps a `datasets.Dataset` with an image column and decodes each image when it is
  read (JPEGs in PIL's draft mode, at the smallest scale that still covers `image_size`). It never
  converts between grayscale and color silently (pass `convert_channels=True` to allow it).
- `load_image_folder` reads a folder of class subfolders offline, in one walk of the folder.
- `load_hub_image_dataset` reads a dataset from the Hugging Face Hub (needs the network once).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image, ImageMode, ImageOps

from .hf_datasets import find_label_column, find_media_column, label_vocabulary, load_hub_split
from .media import BadFileError, MediaDataset, SettingMismatch, folder_dataset

# Gray modes that hold more than 8 bits; PIL's convert("L") clips them instead of rescaling.
_WIDE_GRAY_MAXIMUM = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0}


# -- helpers ------------------------------------------------------------------------------------
def _is_gray(mode: str) -> bool:
    # basemode folds "LA", "I;16", "F", "1" into "L" and "RGBA", "CMYK", "YCbCr" into "RGB"; palette
    # images ("P") count as color, since their palette may hold any color.
    return ImageMode.getmode(mode).basemode == "L"


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info


def _to_channels(image: Image.Image, channels: int) -> Image.Image:
    """Converts to 8-bit "L" or "RGB", dropping alpha. The caller has already decided whether a
    gray <-> color change is allowed."""
    if _is_gray(image.mode):
        if image.mode in _WIDE_GRAY_MAXIMUM or image.mode == "F":
            # Rescale 16-bit gray ("F": assumed in [0, 1]) ourselves: convert("L") would clip at 255.
            array = np.asarray(image, dtype=np.float32) / _WIDE_GRAY_MAXIMUM.get(image.mode, 1.0)
            image = Image.fromarray(np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8))
        else:
            image = image.convert("L")
        return image.convert("RGB") if channels == 3 else image
    if _has_alpha(image) and image.mode != "RGBA":
        image = image.convert("RGBA")  # palette transparency must go through RGBA, or PIL warns
    image = image.convert("RGB")
    return image.convert("L") if channels == 1 else image


def _resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size` (bicubic, which PIL antialiases when shrinking), then center crop."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(C, H, W) float in [0, 1] from an "L" or "RGB" image."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def open_image(value: Mapping[str, Any], shorter_side: int | None = None, draft: bool = True) -> Image.Image:
    """Decodes a `datasets` image value `{"bytes", "path"}` (bytes first), applying its EXIF
    orientation. With `shorter_side` and `draft`, a JPEG is decoded in PIL's draft mode at the
    smallest of the 1/1, 1/2, 1/4, 1/8 scales whose shorter side still covers `shorter_side`
    (the DCT is skipped for the dropped detail: several times faster for large photos)."""
    if value.get("bytes") is not None:
        image = Image.open(io.BytesIO(value["bytes"]))
    elif value.get("path") is not None and os.path.exists(value["path"]):
        image = Image.open(value["path"])
    elif value.get("path") is not None:  # a remote file (streamed hub datasets): datasets fetches it
        return datasets.Image().decode_example(dict(value))
    else:
        raise ValueError("the row holds no image (neither bytes nor path)")
    if draft and shorter_side and image.format == "JPEG":
        width, height = image.size
        scale = shorter_side / min(width, height)
        if scale < 1:  # draft returns a size at least as large as the one asked for
            image.draft(image.mode, (math.ceil(width * scale), math.ceil(height * scale)))
    image.load()  # decodes now: a truncated file fails here, on its own row
    if image.getexif().get(Image.ExifTags.Base.Orientation) is not None:
        image = ImageOps.exif_transpose(image)
    return image


# -- Hugging Face image datasets ------------------------------------------------------------------
class ImageDataset(MediaDataset):
    """A `datasets.Dataset` with an image column, as fixed-size float images in [0, 1].

    Images are resized (shorter side to `image_size`, then a center crop). A grayscale image for
    a 3-channel model, or a color image for a 1-channel model, raises ValueError unless
    `convert_channels=True`; alpha is always dropped. 16-bit gray ("I;16", "I") is rescaled from
    [0, 65535] to 8 bits rather than clipped; float gray ("F") is taken to be in [0, 1].

    Nothing is decoded in the constructor. An unreadable file is handled where it is read, by
    `on_bad_image` ("raise" or "skip"; see `media.py`). `draft=False` decodes JPEGs at full scale.
    """

    kind = "image"

    def __init__(
        self,
        hf_dataset: datasets.Dataset,
        image_size: int,
        channels: int,
        image_column: str | None = None,
        label_column: str | None = None,
        on_bad_image: str = "raise",
        convert_channels: bool = False,
        draft: bool = True,
    ):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}.")
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}.")
        self.image_size, self.channels = image_size, channels
        self.convert_channels, self.draft = convert_channels, draft
        self.image_column = find_media_column(hf_dataset, image_column, datasets.Image, "image_column")
        self.label_column = find_label_column(hf_dataset, label_column, ("label", "labels"), "label_column")
        self.class_names, self._label_ids = label_vocabulary(hf_dataset, self.label_column, "label_column")
        self._mode = hf_dataset.features[self.image_column].mode  # keep a mode the dataset asked for
        columns = [self.image_column] + ([self.label_column] if self.label_column else [])
        super().__init__(hf_dataset, self.image_column, datasets.Image, columns, on_bad_image)

    def _load(self, row_index: int, row: dict) -> dict[str, torch.Tensor]:
        value = row[self.image_column]
        try:
            if not isinstance(value, Mapping):
                raise ValueError("the row holds no image")
            image = open_image(value, self.image_size, self.draft)
            if self._mode and self._mode != image.mode:
                image = image.convert(self._mode)
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            raise BadFileError(f"{self.describe(row_index, value)} could not be decoded ({type(exc).__name__}: {exc}).") from exc
        self._check_channels(image, row_index, value)
        image = _resize_center_crop(_to_channels(image, self.channels), self.image_size)
        return {"pixel_values": to_tensor(image), "label": self._label(row)}

    def _check_channels(self, image: Image.Image, row_index: int, value) -> None:
        if self.convert_channels:
            return
        where = self.describe(row_index, value)
        if self.channels == 3 and _is_gray(image.mode):
            raise SettingMismatch(
                f"{where} is grayscale (PIL mode {image.mode!r}) but channels=3 was asked for. Pass channels=1 "
                "for a grayscale model, or convert_channels=True (--convert_channels) to repeat the gray values into RGB."
            )
        if self.channels == 1 and not _is_gray(image.mode):
            raise SettingMismatch(
                f"{where} is color (PIL mode {image.mode!r}) but channels=1 was asked for. Pass channels=3 "
                "for a color model, or convert_channels=True (--convert_channels) to convert it to grayscale."
            )

    def _label(self, row: dict[str, Any]) -> torch.Tensor:
        if self.label_column is None or row[self.label_column] is None:
            return torch.tensor(-1, dtype=torch.long)
        value = row[self.label_column]
        return torch.tensor(self._label_ids[value] if self._label_ids is not None else value, dtype=torch.long)

    @property
    def id2label(self) -> dict[int, str] | None:
        return dict(enumerate(self.class_names)) if self.class_names else None


# -- loaders ---------------------------------------------------------------------------------------
def load_image_folder(path: str | os.PathLike, image_size: int, channels: int, **kwargs: Any) -> ImageDataset:
    """A folder of images, labels from the top-level subfolder names (`root/cat/1.png` -> "cat");
    files directly in `root` when there are no subfolders (no labels then). File types are those of
    `datasets`' "imagefolder". One walk of the folder, no file opened; `kwargs` go to `ImageDataset`.
    """
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory.")
    extensions = sorted({ext.lower() for ext in ImageFolder.EXTENSIONS})
    return ImageDataset(folder_dataset(root, extensions, datasets.Image, "image", "label", "image"), image_size, channels, **kwargs)


def load_hub_image_dataset(
    name: str, split: str, image_size: int, channels: int, *, load_kwargs: dict[str, Any] | None = None, **kwargs: Any
) -> ImageDataset:
    """`datasets.load_dataset(name, split=split, **load_kwargs)` wrapped in an `ImageDataset(**kwargs)`.

    Needs the network the first time; afterwards `datasets` serves it from its cache.
    """
    local = "a local folder of images with load_image_folder(path, ...)"
    return ImageDataset(load_hub_split(name, split, load_kwargs, local), image_size, channels, **kwargs)
