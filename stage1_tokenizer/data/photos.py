"""Offline natural photos for tests and demos: deterministic random crops of the color photos
scikit-image ships inside its wheel (no pooch, no network)."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .images import to_tensor

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
        return {"pixel_values": to_tensor(image), "label": torch.tensor(label, dtype=torch.long)}
