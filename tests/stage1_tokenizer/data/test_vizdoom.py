"""The built-in frame source: real first-person ViZDoom frames, recorded once into the cache."""

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stage1_tokenizer.data import DEFAULT_VIZDOOM_SCENARIOS, VizDoomFrames
from stage1_tokenizer.data import vizdoom as vizdoom_module

TRAIN_PER_MAP, TEST_PER_MAP = 200, 100
MAPS = len(DEFAULT_VIZDOOM_SCENARIOS)


@pytest.fixture(scope="module")
def doom_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("doom_cache")


@pytest.fixture(scope="module")
def doom_train(doom_cache):
    return VizDoomFrames("train", TRAIN_PER_MAP * MAPS, cache_dir=doom_cache)


@pytest.fixture(scope="module")
def doom_test(doom_cache):
    return VizDoomFrames("test", cache_dir=doom_cache)  # the default: 100 frames per map


def all_pixels(dataset) -> torch.Tensor:
    return torch.stack([dataset[i]["pixel_values"] for i in range(len(dataset))])


def test_vizdoom_items_labels_and_defaults(doom_train, doom_test):
    assert len(doom_train) == TRAIN_PER_MAP * MAPS and len(doom_test) == TEST_PER_MAP * MAPS
    assert doom_train.class_names == list(DEFAULT_VIZDOOM_SCENARIOS) == doom_test.class_names
    item = doom_train[0]
    assert item["pixel_values"].shape == (3, 84, 84) and item["pixel_values"].dtype == torch.float32
    assert item["label"].dtype == torch.long and item["label"].ndim == 0
    # Map-major: each map's frames together, labelled with its position in class_names.
    expected = torch.arange(MAPS).repeat_interleave(TRAIN_PER_MAP)
    assert torch.equal(torch.stack([doom_train[i]["label"] for i in range(len(doom_train))]), expected)
    batch = next(iter(torch.utils.data.DataLoader(doom_train, batch_size=8)))
    assert batch["pixel_values"].shape == (8, 3, 84, 84) and batch["label"].shape == (8,)


def test_vizdoom_frames_are_real_and_varied(doom_train):
    pixels = all_pixels(doom_train)
    assert pixels.min() >= 0 and pixels.max() <= 1
    # Rendered scenes, not blank screens: every frame has contrast, and most have plenty.
    contrast = pixels.flatten(1).std(1)
    assert contrast.min() > 0.02 and contrast.median() > 0.07, (contrast.min(), contrast.median())
    # The agent moves: consecutive frames of an episode differ...
    episodes, labels = doom_train.episodes, doom_train.labels
    same_episode = (episodes[1:] == episodes[:-1]) & (labels[1:] == labels[:-1])
    steps = (pixels[1:] - pixels[:-1]).abs().mean((1, 2, 3))[torch.from_numpy(same_episode)]
    assert (steps > 0.003).float().mean() > 0.95, steps.sort().values[:10]
    # ...but are correlated, far more than random pairs of frames of the same map.
    standardized = pixels.flatten(1)
    standardized = (standardized - standardized.mean(1, keepdim=True)) / standardized.std(1, keepdim=True)
    consecutive = (standardized[1:] * standardized[:-1]).mean(1)[torch.from_numpy(same_episode)].mean()
    generator = torch.Generator().manual_seed(0)
    shuffled = torch.cat([torch.randperm(TRAIN_PER_MAP, generator=generator) + m * TRAIN_PER_MAP for m in range(MAPS)])
    unrelated = (standardized * standardized[shuffled]).mean(1).mean()
    assert consecutive > 0.5 and consecutive - unrelated > 0.25, (consecutive, unrelated)
    # Episodes leave the spawn point facing different ways: their first frames differ.
    starts = pixels[torch.from_numpy(np.flatnonzero(np.diff(doom_train.episodes, prepend=-1) != 0))]
    assert (starts[1:] - starts[:-1]).abs().mean((1, 2, 3)).min() > 0.01


def test_vizdoom_maps_are_told_apart_by_their_colors(doom_train, doom_test):
    """A nearest-mean classifier on 8x8 thumbnails, fit on train, names the map of test frames."""

    def thumbnails(dataset):
        return F.interpolate(all_pixels(dataset), size=(8, 8), mode="area").flatten(1)

    train, test = thumbnails(doom_train), thumbnails(doom_test)
    train_labels, test_labels = torch.from_numpy(doom_train.labels), torch.from_numpy(doom_test.labels)
    means = torch.stack([train[train_labels == m].mean(0) for m in range(MAPS)])
    predicted = torch.cdist(test, means).argmin(1)
    per_map = [(predicted[test_labels == m] == m).float().mean().item() for m in range(MAPS)]
    assert np.mean(per_map) > 3 / MAPS, per_map  # chance is 1 / MAPS


def test_vizdoom_splits_hold_different_episodes(doom_train, doom_test):
    def hashes(dataset):
        return {hashlib.sha1(frame.tobytes()).hexdigest() for frame in dataset.frames}

    assert not hashes(doom_train) & hashes(doom_test)


def test_vizdoom_second_construction_reads_the_cache(doom_train, doom_cache, monkeypatch):
    def no_game(*args, **kwargs):
        raise AssertionError("the game was started although the frames are cached")

    monkeypatch.setattr(vizdoom_module, "_start_doom_game", no_game)
    again = VizDoomFrames("train", TRAIN_PER_MAP * MAPS, cache_dir=doom_cache)
    assert np.array_equal(again.frames, doom_train.frames) and np.array_equal(again.labels, doom_train.labels)
    # A map's frames do not depend on the other maps asked for: a subset is served from the cache too.
    subset = VizDoomFrames("train", 2 * TRAIN_PER_MAP, scenarios=DEFAULT_VIZDOOM_SCENARIOS[2:4], cache_dir=doom_cache)
    assert np.array_equal(subset.frames, doom_train.frames[2 * TRAIN_PER_MAP : 4 * TRAIN_PER_MAP])
    assert subset.labels.tolist() == [0] * TRAIN_PER_MAP + [1] * TRAIN_PER_MAP


class _GameThatFails:
    """A started game that raises on its `fail_at`-th action."""

    def __init__(self, game, fail_at):
        self.game, self.fail_at, self.actions = game, fail_at, 0

    def make_action(self, *args):
        self.actions += 1
        if self.actions == self.fail_at:
            raise RuntimeError("engine crashed")
        return self.game.make_action(*args)

    def __getattr__(self, name):
        return getattr(self.game, name)


def test_interrupted_recording_leaves_no_cache(tmp_path, monkeypatch):
    working_directory = tmp_path / "cwd"
    working_directory.mkdir()
    monkeypatch.chdir(working_directory)
    start_game = vizdoom_module._start_doom_game
    monkeypatch.setattr(vizdoom_module, "_start_doom_game", lambda *args: _GameThatFails(start_game(*args), 30))
    with pytest.raises(RuntimeError, match="engine crashed"):
        VizDoomFrames("test", 50, scenarios=["my_way_home"], cache_dir=tmp_path)
    assert not (tmp_path / "vizdoom").exists() or not list((tmp_path / "vizdoom").iterdir())

    # A failure while the file is being written leaves neither the file nor its partial copy.
    monkeypatch.setattr(vizdoom_module, "_start_doom_game", start_game)

    def write_half_then_fail(file, **arrays):
        file.write(b"PK\x03\x04 half an npz")
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(vizdoom_module.np, "savez_compressed", write_half_then_fail)
        with pytest.raises(OSError, match="disk full"):
            VizDoomFrames("test", 50, scenarios=["my_way_home"], cache_dir=tmp_path)
    assert not (tmp_path / "vizdoom").exists() or not list((tmp_path / "vizdoom").iterdir())

    # The next attempt records the frames; a damaged cache file is then reported, not used.
    frames = VizDoomFrames("test", 50, scenarios=["my_way_home"], cache_dir=tmp_path)
    assert len(frames) == 50
    (cached,) = (tmp_path / "vizdoom").iterdir()
    cached.write_bytes(cached.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a complete ViZDoom frame cache.*Delete it"):
        VizDoomFrames("test", 50, scenarios=["my_way_home"], cache_dir=tmp_path)
    # The engine's own files (_vizdoom.ini, _vizdoom/) went to a temporary folder, not the working directory.
    assert not list(working_directory.iterdir())


def test_vizdoom_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown ViZDoom scenarios \['lab_maze'\]; the known ones are .*my_way_home"):
        VizDoomFrames(scenarios=["my_way_home", "lab_maze"], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="distinct"):
        VizDoomFrames(scenarios=["basic", "basic"], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        VizDoomFrames("validation", cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"at least one frame per scenario \(6\), got 5"):
        VizDoomFrames("train", 5, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="size must be a positive"):
        VizDoomFrames(size=0, cache_dir=tmp_path)
