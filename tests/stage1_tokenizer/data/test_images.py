"""Image data sources: image folders, bad files met where they are read, channel mismatches, JPEG
draft decoding, offline hub errors, photo crops."""

import io
import time

import datasets
import huggingface_hub
import numpy as np
import pytest
import torch
from PIL import Image

from stage1_tokenizer.data import ImageDataset, PhotoCrops, load_hub_image_dataset, load_image_folder

RED, BLUE = (255, 0, 0), (0, 0, 255)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def load(root, tmp_path, image_size=8, channels=3, **kwargs):
    return load_image_folder(root, image_size, channels, **kwargs)


@pytest.fixture
def two_classes(tmp_path):
    """cat/: solid red images, dog/: solid blue ones, of assorted sizes."""
    root = tmp_path / "images"
    for name, color in (("cat", RED), ("dog", BLUE)):
        (root / name).mkdir(parents=True)
        for i, size in enumerate([(8, 8), (20, 10), (9, 31)]):
            Image.new("RGB", size, color).save(root / name / f"{i}.png")
    return root


def test_image_folder_labels_shapes_and_colors(two_classes, tmp_path):
    dataset = load(two_classes, tmp_path)
    assert len(dataset) == 6 and dataset.class_names == ["cat", "dog"]
    expected = {0: torch.tensor([1.0, 0.0, 0.0]), 1: torch.tensor([0.0, 0.0, 1.0])}
    for i in range(len(dataset)):
        item = dataset[i]
        assert item["pixel_values"].shape == (3, 8, 8) and item["pixel_values"].dtype == torch.float32
        assert item["label"].dtype == torch.long and item["label"].ndim == 0
        # Every pixel, resized or not, is its class's color.
        color = expected[int(item["label"])][:, None, None].expand(3, 8, 8)
        torch.testing.assert_close(item["pixel_values"], color, atol=1 / 255, rtol=0)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch["pixel_values"].shape == (4, 3, 8, 8) and batch["label"].shape == (4,)


def test_pattern_survives_and_wide_images_are_center_cropped(tmp_path):
    rng = np.random.default_rng(0)
    square = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    wide = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)  # H=8, W=12: no resize, crop columns 2..9
    root = tmp_path / "images" / "only"
    root.mkdir(parents=True)
    Image.fromarray(square).save(root / "a.png")
    Image.fromarray(wide).save(root / "b.png")
    dataset = load(root.parent, tmp_path)
    by_shape = {}
    for i in range(len(dataset)):
        by_shape[i] = (dataset[i]["pixel_values"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    got = sorted(by_shape.values(), key=lambda a: a.tobytes())
    want = sorted([square, wide[:, 2:10]], key=lambda a: a.tobytes())
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_grayscale_for_three_channels_needs_the_flag(tmp_path):
    root = tmp_path / "images" / "gray"
    root.mkdir(parents=True)
    Image.new("L", (8, 8), 200).save(root / "g.png")
    message = r"image 0 \(.*g\.png\) is grayscale \(PIL mode 'L'\).*channels=1.*convert_channels=True"
    with pytest.raises(ValueError, match=message):
        load(root.parent, tmp_path)[0]
    with pytest.raises(ValueError, match="convert_channels=True"):  # a setting, not a bad file: raised under "skip" too
        load(root.parent, tmp_path, on_bad_image="skip")[0]
    pixels = load(root.parent, tmp_path, convert_channels=True)[0]["pixel_values"]
    assert pixels.shape == (3, 8, 8)
    torch.testing.assert_close(pixels, torch.full((3, 8, 8), 200 / 255))
    assert torch.equal(load(root.parent, tmp_path, channels=1)[0]["pixel_values"], pixels[:1])


def test_color_for_one_channel_and_sixteen_bit_gray(tmp_path):
    root = tmp_path / "images" / "mixed"
    root.mkdir(parents=True)
    Image.new("RGB", (8, 8), RED).save(root / "red.png")
    with pytest.raises(ValueError, match=r"color \(PIL mode 'RGB'\).*channels=1.*convert_channels=True"):
        load(root.parent, tmp_path, channels=1)[0]
    luminance = load(root.parent, tmp_path, channels=1, convert_channels=True)[0]["pixel_values"]
    torch.testing.assert_close(luminance, torch.full((1, 8, 8), 76 / 255))  # ITU-R 601: 0.299 * 255

    deep = tmp_path / "deep" / "only"
    deep.mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(deep / "d.png")
    assert Image.open(deep / "d.png").mode.startswith("I")
    pixels = load(deep.parent, tmp_path, channels=1)[0]["pixel_values"]
    torch.testing.assert_close(pixels, torch.ones(1, 8, 8))  # rescaled, not clipped to 255/65535


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_bad_files_raise_or_are_skipped_where_they_are_read(two_classes, tmp_path, kind):
    good = png_bytes(Image.new("RGB", (32, 32), BLUE))
    bad = good[: len(good) // 2] if kind == "truncated" else b"this is not an image" * 8
    (two_classes / "dog" / "x.png").write_bytes(bad)

    dataset = load(two_classes, tmp_path)  # nothing is decoded when the dataset is built
    assert len(dataset) == 7
    index = next(i for i in range(7) if "x.png" in dataset.describe(i))
    with pytest.raises(ValueError) as raised:
        dataset[index]
    message = str(raised.value)
    assert f"image {index} (" in message and "x.png" in message and "on_bad_file='skip'" in message

    dataset = load(two_classes, tmp_path, on_bad_image="skip")
    replaced = dataset[index]  # the next usable row takes its place: a batch stays full
    assert int(replaced["bad_files_skipped"]) == 1
    assert torch.equal(replaced["pixel_values"], dataset[(index + 1) % 7]["pixel_values"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=7)
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (7, 3, 8, 8) and int(batch["bad_files_skipped"].sum()) == 1


def test_building_a_dataset_decodes_nothing(tmp_path):
    """A folder of 400 images builds as fast as one of 40: the constructor reads no image."""
    seconds = {}
    for count in (40, 400):
        root = tmp_path / f"n{count}" / "only"
        root.mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (64, 48), (i % 256, 0, 0)).save(root / f"{i}.png")
        load(root.parent, tmp_path / f"cache{count}")  # datasets' file index, made once and cached
        start = time.perf_counter()
        dataset = load(root.parent, tmp_path / f"cache{count}")
        seconds[count] = time.perf_counter() - start
        assert len(dataset) == count
    assert seconds[400] < 1.0 + 2 * seconds[40], seconds


def test_jpeg_draft_decoding_matches_full_decoding(tmp_path):
    """Decoding a large JPEG at a reduced DCT scale gives nearly the image of a full decode."""
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), np.ones((16, 16, 1), dtype=np.uint8))
    root = tmp_path / "jpegs" / "only"
    root.mkdir(parents=True)
    Image.fromarray(smooth).save(root / "big.jpg", quality=95)  # 640 x 480
    draft = load(root.parent, tmp_path, image_size=64)[0]["pixel_values"]
    full = load(root.parent, tmp_path / "full", image_size=64, draft=False)[0]["pixel_values"]
    assert draft.shape == full.shape == (3, 64, 64)
    assert (draft - full).abs().mean() < 0.02


def test_in_memory_dataset_string_labels_and_no_image_column():
    images = [Image.new("RGB", (4, 4), RED), Image.new("RGB", (4, 4), BLUE)]
    features = datasets.Features({"picture": datasets.Image(), "label": datasets.Value("string")})
    hf = datasets.Dataset.from_dict({"picture": images, "label": ["zebra", "ant"]}, features=features)
    dataset = ImageDataset(hf, image_size=4, channels=3)
    assert dataset.image_column == "picture" and dataset.class_names == ["ant", "zebra"]
    assert [int(dataset[i]["label"]) for i in range(2)] == [1, 0]

    unlabeled = ImageDataset(hf.remove_columns("label"), image_size=4, channels=3)
    assert int(unlabeled[0]["label"]) == -1

    with pytest.raises(ValueError, match=r"no image column.*\['x', 'y'\]"):
        ImageDataset(datasets.Dataset.from_dict({"x": [1], "y": [2]}), image_size=4, channels=3)


def test_missing_or_empty_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load(missing, tmp_path)
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="holds no image files"):
        load(tmp_path / "empty", tmp_path)


def test_hub_dataset_offline_error_suggests_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Both libraries read the variables at import, so set their flags too.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match=r"could not be loaded offline.*load_image_folder"):
        load_hub_image_dataset(
            "vqgen-tests/no-such-dataset", "train", 32, 3, load_kwargs={"cache_dir": str(tmp_path)}
        )


def test_photo_crops_are_deterministic_and_split_by_photo():
    train = PhotoCrops(image_size=16, num_crops=24, seed=3)
    again = PhotoCrops(image_size=16, num_crops=24, seed=3)
    other_seed = PhotoCrops(image_size=16, num_crops=24, seed=4)
    test = PhotoCrops(image_size=16, num_crops=24, split="test", seed=3)

    first = torch.stack([train[i]["pixel_values"] for i in range(len(train))])
    assert first.shape == (24, 3, 16, 16) and 0.0 <= first.min() and first.max() <= 1.0
    assert torch.equal(first, torch.stack([again[i]["pixel_values"] for i in range(len(again))]))
    assert not torch.equal(first, torch.stack([other_seed[i]["pixel_values"] for i in range(24)]))
    assert len({crop.numpy().tobytes() for crop in first}) == 24  # every crop differs
    assert first.std() > 0.05  # real picture content, not a flat fill

    assert set(train.photos).isdisjoint(test.photos) and len(train.photos) >= 2 and test.photos
    train_labels = {int(train[i]["label"]) for i in range(len(train))}
    test_labels = {int(test[i]["label"]) for i in range(len(test))}
    assert train_labels.isdisjoint(test_labels)

    gray = PhotoCrops(image_size=16, num_crops=2, seed=3, channels=1)
    assert gray[0]["pixel_values"].shape == (1, 16, 16)
