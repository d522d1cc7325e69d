"""Image sources for stage one: Hugging Face image datasets, local image folders, and offline photo crops.

Every source yields `{"pixel_values": FloatTensor (channels, image_size, image_size) in [0, 1],
"label": LongTensor scalar}` (label -1 when the source has none), which is what `VQVAEModel` takes
once batched.

- `ImageDataset` wraps a `datasets.Dataset` with an image column. It never converts between
  grayscale and color silently (pass `convert_channels=True` to allow it), and with
  `on_bad_image="skip"` it drops unreadable files up front so that no epoch dies halfway.
- `load_image_folder` reads a folder of class subfolders offline (`datasets`' "imagefolder").
- `load_hub_image_dataset` reads a dataset from the Hugging Face Hub (needs the network once).
- `PhotoCrops` cuts deterministic random crops out of the color photos scikit-image ships, a
  tiny offline set of natural images for tests and demos.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from PIL import Image, ImageMode
from tqdm.auto import tqdm

from .hf_datasets import (
    find_label_column,
    find_media_column,
    label_vocabulary,
    load_hub_split,
)

logger = logging.getLogger(__name__)

_BAD_IMAGE_POLICIES = ("raise", "skip")
# Gray modes that hold more than 8 bits; PIL's convert("L") clips them instead of rescaling.
_WIDE_GRAY_MAXIMUM = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0}


# -- helpers ------------------------------------------------------------------------------------
def check_divisible(image_size: int, stride: int) -> None:
    """Raises ValueError unless `image_size` is a positive multiple of the model's total `stride`."""
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}.")
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}.")
    if image_size % stride:
        lower = image_size // stride * stride
        upper = lower + stride
        nearest = f"{lower} or {upper}" if lower > 0 else f"{upper}"
        raise ValueError(
            f"image_size {image_size} is not divisible by the model's total stride {stride}; "
            f"use a multiple of {stride}, the nearest being {nearest}."
        )


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


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """(C, H, W) float in [0, 1] from an "L" or "RGB" image."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


# -- Hugging Face image datasets ------------------------------------------------------------------
class ImageDataset(torch.utils.data.Dataset):
    """A `datasets.Dataset` with an image column, as fixed-size float images in [0, 1].

    Images are resized (shorter side to `image_size`, then a center crop). A grayscale image for
    a 3-channel model, or a color image for a 1-channel model, raises ValueError unless
    `convert_channels=True`; alpha is always dropped. 16-bit gray ("I;16", "I") is rescaled from
    [0, 65535] to 8 bits rather than clipped; float gray ("F") is taken to be in [0, 1].

    The constructor decodes every image once (a progress bar), so that problems surface before
    training: `on_bad_image="raise"` (default) raises ValueError at the first unreadable image,
    naming it; `on_bad_image="skip"` drops the unreadable ones and lists them in `skipped` as
    `(row index, reason)`; indices of this dataset then run over the readable rows only.
    """

    def __init__(
        self,
        hf_dataset: datasets.Dataset,
        image_size: int,
        channels: int,
        image_column: str | None = None,
        label_column: str | None = None,
        on_bad_image: str = "raise",
        convert_channels: bool = False,
    ):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}.")
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}.")
        if on_bad_image not in _BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image must be one of {_BAD_IMAGE_POLICIES}, got {on_bad_image!r}.")
        self.image_size = image_size
        self.channels = channels
        self.convert_channels = convert_channels
        self.on_bad_image = on_bad_image
        self.image_column = find_media_column(hf_dataset, image_column, datasets.Image, "image_column")
        self.label_column = find_label_column(hf_dataset, label_column, ("label", "labels"), "label_column")
        self.class_names, self._label_ids = label_vocabulary(hf_dataset, self.label_column, "label_column")

        # Decode ourselves from {"bytes", "path"}, so that a bad file fails on its own row with its
        # path in hand, instead of inside `datasets` whenever the row is touched.
        feature = hf_dataset.features[self.image_column]
        self._decoder = datasets.Image(mode=feature.mode)  # keep a mode the dataset asked for
        columns = [self.image_column] + ([self.label_column] if self.label_column else [])
        self._rows = hf_dataset.select_columns(columns).cast_column(self.image_column, datasets.Image(decode=False))

        # Every image is decoded once here, so that a bad file or a channel mismatch is reported
        # (or skipped) before any training step, never mid-epoch.
        self.skipped: list[tuple[int, str]] = []
        self._indices: list[int] = self._check_images()

    # -- decoding -----------------------------------------------------------------------------------
    def _decode(self, value: dict[str, Any] | None) -> Image.Image:
        if value is None or (value.get("bytes") is None and value.get("path") is None):
            raise ValueError("the row holds no image (neither bytes nor path)")
        # decode_example opens, load()s (which catches truncated files) and applies EXIF orientation.
        return self._decoder.decode_example(value)

    def _check_images(self) -> list[int]:
        """Indices of the readable rows; with on_bad_image="raise", the first bad one raises."""
        keep: list[int] = []
        images = self._rows.select_columns([self.image_column])
        for index, row in enumerate(tqdm(images, desc="Checking images", unit="img", total=len(images))):
            value = row[self.image_column]
            try:
                image = self._decode(value)
            except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
                if self.on_bad_image == "raise":
                    raise ValueError(
                        f"image {index} could not be decoded ({self._describe_failure(value, exc)}). Pass "
                        "on_bad_image='skip' to drop unreadable images when the dataset is built."
                    ) from exc
                self.skipped.append((index, self._describe_failure(value, exc)))
                continue
            # A channel mismatch is a setting to fix, not a bad file: say so now, not mid-epoch.
            self._check_channels(image, index, value.get("path"))
            keep.append(index)
        if self.skipped:
            first_index, first_reason = self.skipped[0]
            logger.warning(
                "Skipped %d of %d images that could not be decoded (first: row %d, %s); see `.skipped`.",
                len(self.skipped), len(images), first_index, first_reason,
            )  # fmt: skip
        if not keep:
            raise ValueError(f"none of the {len(images)} images could be decoded; first failure: {self.skipped[0][1]}.")
        return keep

    @staticmethod
    def _describe_failure(value: dict[str, Any] | None, exc: Exception) -> str:
        path = value.get("path") if isinstance(value, dict) else None
        where = f"{path}: " if path else ""
        return f"{where}{type(exc).__name__}: {exc}"

    def _check_channels(self, image: Image.Image, index: int, path: str | None = None) -> None:
        if self.convert_channels:
            return
        where = f"image {index} ({path})" if path else f"image {index}"
        if self.channels == 3 and _is_gray(image.mode):
            raise ValueError(
                f"{where} is grayscale (PIL mode {image.mode!r}) but channels=3 was asked for. Pass channels=1 "
                "for a grayscale model, or convert_channels=True to repeat the gray values into RGB."
            )
        if self.channels == 1 and not _is_gray(image.mode):
            raise ValueError(
                f"{where} is color (PIL mode {image.mode!r}) but channels=1 was asked for. Pass channels=3 "
                "for a color model, or convert_channels=True to convert it to grayscale (PIL mode 'L')."
            )

    # -- Dataset ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} images.")
        row_index = self._indices[index]
        row = self._rows[row_index]
        value = row[self.image_column]
        try:
            image = self._decode(value)
        except Exception as exc:
            where = f"image {index}" if row_index == index else f"image {index} (row {row_index})"
            raise ValueError(
                f"{where} could not be decoded ({self._describe_failure(value, exc)}). Pass on_bad_image='skip' "
                "to drop unreadable images when the dataset is built."
            ) from exc
        self._check_channels(image, index, value.get("path"))
        image = _resize_center_crop(_to_channels(image, self.channels), self.image_size)
        return {"pixel_values": _to_tensor(image), "label": self._label(row)}

    def _label(self, row: dict[str, Any]) -> torch.Tensor:
        if self.label_column is None or row[self.label_column] is None:
            return torch.tensor(-1, dtype=torch.long)
        value = row[self.label_column]
        return torch.tensor(self._label_ids[value] if self._label_ids is not None else value, dtype=torch.long)


# -- loaders ---------------------------------------------------------------------------------------
def load_image_folder(
    path: str | os.PathLike, image_size: int, channels: int, *, cache_dir: str | None = None, **kwargs: Any
) -> ImageDataset:
    """A folder of images, labels from the class subfolder names (`root/cat/1.png` -> "cat").

    `cache_dir` is where `datasets` keeps its index of the files; `kwargs` go to `ImageDataset`.
    """
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory.")
    extensions = {ext.lower() for ext in ImageFolder.EXTENSIONS}
    if not any(p.is_file() and p.suffix.lower() in extensions for p in root.rglob("*")):
        raise FileNotFoundError(
            f"image folder {root} holds no image files (looked for {', '.join(sorted(extensions)[:8])}, ...). "
            "Put the images in one subfolder per class, e.g. root/cat/1.png."
        )
    hf_dataset = datasets.load_dataset("imagefolder", data_dir=str(root), split="train", cache_dir=cache_dir)
    return ImageDataset(hf_dataset, image_size, channels, **kwargs)


def load_hub_image_dataset(
    name: str, split: str, image_size: int, channels: int, *, load_kwargs: dict[str, Any] | None = None, **kwargs: Any
) -> ImageDataset:
    """`datasets.load_dataset(name, split=split, **load_kwargs)` wrapped in an `ImageDataset(**kwargs)`.

    Needs the network the first time; afterwards `datasets` serves it from its cache.
    """
    local = "a local folder of images with load_image_folder(path, ...)"
    return ImageDataset(load_hub_split(name, split, load_kwargs, local), image_size, channels, **kwargs)


# -- offline natural photos ------------------------------------------------------------------------
# Color photos that scikit-image ships inside its wheel (loader name, file in skimage/data), so
# they load without pooch or the network. Labels are positions in this tuple, stable across
# versions even when one is missing. The last two are held out as the "test" split.
PHOTOS: tuple[tuple[str, str], ...] = (
    ("astronaut", "astronaut.png"),
    ("chelsea", "chelsea.png"),
    ("hubble_deep_field", "hubble_deep_field.jpg"),
    ("immunohistochemistry", "ihc.png"),
    ("motorcycle_left", "motorcycle_left.png"),
    ("retina", "retina.jpg"),
    ("coffee", "coffee.png"),
    ("rocket", "rocket.jpg"),
)
TEST_PHOTOS = ("coffee", "rocket")


@functools.lru_cache(maxsize=None)
def _load_photo(name: str) -> Image.Image | None:
    """The photo as an RGB PIL image, or None when this scikit-image lacks it offline."""
    try:
        import skimage.data
    except ImportError as exc:
        raise ImportError("PhotoCrops needs scikit-image: `pip install scikit-image`.") from exc
    filename = dict(PHOTOS)[name]
    # Only files inside the installed package: anything else would make skimage fetch it with pooch.
    if not (Path(skimage.data.__file__).parent / filename).is_file():
        return None
    try:
        if name == "motorcycle_left":  # no loader of its own; the left view of the stereo pair
            array = skimage.data.stereo_motorcycle()[0]
        elif hasattr(skimage.data, name):
            array = getattr(skimage.data, name)()
        else:
            return None
    except Exception:  # a loader that wants pooch or the network after all
        return None
    if array.ndim != 3 or array.shape[2] < 3 or array.dtype != np.uint8:
        return None
    return Image.fromarray(np.ascontiguousarray(array[:, :, :3]))


def available_photos() -> list[str]:
    """Names from `PHOTOS` that load offline in the installed scikit-image."""
    return [name for name, _ in PHOTOS if _load_photo(name) is not None]


class PhotoCrops(torch.utils.data.Dataset):
    """Deterministic random square crops of scikit-image's color photos, resized to `image_size`.

    The split is by photo: `TEST_PHOTOS` for "test", the rest for "train", so no test pixel is
    ever trained on. Crop sides are log-uniform between `image_size` and the photo's shorter side
    (several scales of the same scene). The label is the photo's position in `PHOTOS`. Only color
    photos are used; with `channels=1` they are converted to luminance (PIL "L").
    """

    def __init__(self, image_size: int, num_crops: int, split: str = "train", seed: int = 0, channels: int = 3):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}.")
        if image_size <= 0 or num_crops <= 0:
            raise ValueError(f"image_size and num_crops must be positive, got {image_size} and {num_crops}.")
        self.image_size, self.num_crops, self.split, self.channels = image_size, num_crops, split, channels
        names = [name for name in available_photos() if (name in TEST_PHOTOS) == (split == "test")]
        if not names:
            raise RuntimeError(f"no {split} photos of {[n for n, _ in PHOTOS]} load offline from this scikit-image.")
        self.photos = names
        labels = {name: i for i, (name, _) in enumerate(PHOTOS)}

        # All randomness is drawn here, from (seed, split): item i is the same crop in every
        # process and epoch, and train and test draw from different streams.
        rng = np.random.default_rng([seed, 0 if split == "train" else 1])
        self._crops: list[tuple[int, int, int, int, int]] = []  # (label, photo, left, top, side)
        for _ in range(num_crops):
            photo = int(rng.integers(len(names)))
            width, height = _load_photo(names[photo]).size
            max_side = min(width, height)
            min_side = min(image_size, max_side)  # a photo smaller than image_size is upsampled whole
            side = int(round(math.exp(rng.uniform(math.log(min_side), math.log(max_side)))))
            left = int(rng.integers(width - side + 1))
            top = int(rng.integers(height - side + 1))
            self._crops.append((labels[names[photo]], photo, left, top, side))

    def __len__(self) -> int:
        return self.num_crops

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        label, photo, left, top, side = self._crops[index]
        image = _load_photo(self.photos[photo]).crop((left, top, left + side, top + side))
        if self.channels == 1:
            image = image.convert("L")
        if side != self.image_size:
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        return {"pixel_values": _to_tensor(image), "label": torch.tensor(label, dtype=torch.long)}
