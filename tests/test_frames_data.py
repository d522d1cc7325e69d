"""Frame sources: ViZDoom's recorded maps (real, varied, told apart by map, cached atomically),
frame array files, and Gymnasium environments."""

import hashlib

import gymnasium
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gymnasium import spaces
from PIL import Image

from stage1_tokenizer.data import (
    DEFAULT_VIZDOOM_SCENARIOS,
    FrameArrays,
    GymnasiumFrames,
    VizDoomFrames,
)
from stage1_tokenizer.data import frames as frames_module

TRAIN_PER_MAP, TEST_PER_MAP = 200, 100
MAPS = len(DEFAULT_VIZDOOM_SCENARIOS)


# -- ViZDoom ---------------------------------------------------------------------------------------
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

    monkeypatch.setattr(frames_module, "_start_doom_game", no_game)
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
    start_game = frames_module._start_doom_game
    monkeypatch.setattr(frames_module, "_start_doom_game", lambda *args: _GameThatFails(start_game(*args), 30))
    with pytest.raises(RuntimeError, match="engine crashed"):
        VizDoomFrames("test", 50, scenarios=["my_way_home"], cache_dir=tmp_path)
    assert not list((tmp_path / "vizdoom").iterdir())

    # A failure while the file is being written leaves neither the file nor its partial copy.
    monkeypatch.setattr(frames_module, "_start_doom_game", start_game)

    def write_half_then_fail(file, **arrays):
        file.write(b"PK\x03\x04 half an npz")
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(frames_module.np, "savez_compressed", write_half_then_fail)
        with pytest.raises(OSError, match="disk full"):
            VizDoomFrames("test", 50, scenarios=["my_way_home"], cache_dir=tmp_path)
    assert not list((tmp_path / "vizdoom").iterdir())

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


# -- FrameArrays -------------------------------------------------------------------------------------
def patterned_frames(count, height, width, seed=0):
    """Smooth color gradients with a random offset per frame: resizing changes them little."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width]
    gradient = np.stack([rows / height, columns / width, (rows + columns) / (height + width)], axis=-1) * 200
    return np.round([gradient + rng.integers(0, 55) for _ in range(count)]).astype(np.uint8)


def test_frame_arrays_npz_resizes_and_reads_labels(tmp_path):
    frames = patterned_frames(5, 120, 160)
    path = tmp_path / "run.npz"
    np.savez(path, frames=frames, labels=np.array([0, 0, 1, 1, 2]), class_names=np.array(["hall", "maze", "yard"]))
    dataset = FrameArrays(path)
    assert len(dataset) == 5 and dataset.class_names == ["hall", "maze", "yard"]
    assert [int(dataset[i]["label"]) for i in range(5)] == [0, 0, 1, 1, 2]
    for i in (0, 4, -1):
        pixels = dataset[i]["pixel_values"]
        assert pixels.shape == (3, 84, 84) and pixels.dtype == torch.float32
        # The whole 160x120 view squeezed to 84x84, as PIL's bicubic resize would.
        reference = np.asarray(Image.fromarray(frames[i]).resize((84, 84), Image.Resampling.BICUBIC)) / 255.0
        assert np.abs(pixels.permute(1, 2, 0).numpy() - reference).mean() < 0.01
    # A single color stays exactly that color.
    np.savez(tmp_path / "flat.npz", np.full((1, 30, 50, 3), (10, 200, 90), np.uint8))
    flat = FrameArrays(tmp_path / "flat.npz", size=16)[0]["pixel_values"]
    torch.testing.assert_close(flat, torch.tensor([10, 200, 90])[:, None, None].expand(3, 16, 16) / 255.0)


def test_frame_arrays_npy_floats_and_keys(tmp_path):
    frames = patterned_frames(3, 84, 84).astype(np.float32) / 255
    np.save(tmp_path / "run.npy", frames)
    dataset = FrameArrays(tmp_path / "run.npy")
    assert len(dataset) == 3 and dataset.class_names is None and int(dataset[1]["label"]) == -1
    torch.testing.assert_close(dataset[1]["pixel_values"], torch.from_numpy(frames[1]).permute(2, 0, 1))
    # key picks one of several arrays.
    np.savez(tmp_path / "two.npz", left=frames, right=frames[:2])
    assert len(FrameArrays(tmp_path / "two.npz", key="right")) == 2


def test_frame_arrays_errors(tmp_path):
    def saved(name, array):
        np.save(tmp_path / name, array)
        return tmp_path / name

    with pytest.raises(FileNotFoundError, match="missing.npz does not exist"):
        FrameArrays(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match=r"shape \(4, 32, 32\).*\(N, H, W, 3\).*grayscale"):
        FrameArrays(saved("gray.npy", np.zeros((4, 32, 32), np.uint8)))
    with pytest.raises(ValueError, match=r"shape \(4, 3, 32, 32\).*channels-first.*transpose\(0, 2, 3, 1\)"):
        FrameArrays(saved("chw.npy", np.zeros((4, 3, 32, 32), np.uint8)))
    with pytest.raises(ValueError, match=r"shape \(4, 32, 32, 4\).*RGBA"):
        FrameArrays(saved("rgba.npy", np.zeros((4, 32, 32, 4), np.uint8)))
    with pytest.raises(ValueError, match=r"holds no frames \(shape \(0, 32, 32, 3\)\)"):
        FrameArrays(saved("empty.npy", np.zeros((0, 32, 32, 3), np.uint8)))
    with pytest.raises(ValueError, match=r"floats from 0.0 to 255.0, but float frames must lie in \[0, 1\]. Divide"):
        FrameArrays(saved("float255.npy", np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3) % 256))
    with pytest.raises(ValueError, match="dtype int64.*uint8"):
        FrameArrays(saved("int.npy", np.zeros((2, 8, 8, 3), np.int64)))
    np.savez(tmp_path / "run.npz", frames=np.zeros((2, 8, 8, 3), np.uint8), labels=np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"has no array 'video'; its arrays are \['frames', 'labels'\]"):
        FrameArrays(tmp_path / "run.npz", key="video")
    with pytest.raises(ValueError, match=r"'labels' .* must be 2 integers, one per frame.*shape \(3,\)"):
        FrameArrays(tmp_path / "run.npz")
    np.savez(tmp_path / "two.npz", left=np.zeros((2, 8, 8, 3), np.uint8), right=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"holds the arrays \['left', 'right'\]; pass key="):
        FrameArrays(tmp_path / "two.npz")
    with pytest.raises(ValueError, match="neither .npy nor .npz"):
        FrameArrays(saved("run.npy", np.zeros((1, 8, 8, 3), np.uint8)).rename(tmp_path / "run.bin"))


# -- Gymnasium ---------------------------------------------------------------------------------------
class ColorRooms(gymnasium.Env):
    """Flat-colored frames, one gray level per (episode, step); an episode ends after `length` steps."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, length=4, shape=(24, 32, 3), render_mode=None, observe_pixels=True):
        self.length, self.shape, self.render_mode, self.observe_pixels = length, shape, render_mode, observe_pixels
        self.observation_space = spaces.Box(0, 255, shape, np.uint8) if observe_pixels else spaces.Discrete(100)
        self.action_space = spaces.Discrete(3)
        self.resets, self.step_count = 0, 0

    def gray(self):
        return (self.resets - 1) * 50 + self.step_count * 10

    def observation(self):
        return np.full(self.shape, self.gray(), np.uint8) if self.observe_pixels else self.step_count

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.resets, self.step_count = self.resets + 1, 0
        return self.observation(), {}

    def step(self, action):
        self.step_count += 1
        return self.observation(), 0.0, self.step_count >= self.length, False, {}

    def render(self):
        return np.full(self.shape, self.gray(), np.uint8)


def grays(dataset):
    return [round(float(dataset[i]["pixel_values"].mean()) * 255) for i in range(len(dataset))]


def test_gymnasium_frames_follow_episodes_and_resets():
    env = ColorRooms()
    dataset = GymnasiumFrames(env, 12, size=16)
    # Each episode: the reset frame, then one per step up to the terminating one; then a reset.
    assert grays(dataset) == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110]
    assert [int(dataset[i]["label"]) for i in range(12)] == [0] * 5 + [1] * 5 + [2] * 2
    assert dataset.num_episodes == 3 and env.resets == 3
    assert dataset[0]["pixel_values"].shape == (3, 16, 16) and dataset.class_names is None


def test_gymnasium_policy_frame_skip_and_render_frames():
    seen = []

    def policy(observation):
        seen.append(observation)
        return 0

    dataset = GymnasiumFrames(ColorRooms(), 6, size=8, policy=policy, frame_skip=2)
    # Two steps per kept frame: reset, step 2, step 4 (terminated), reset, ...
    assert grays(dataset) == [0, 20, 40, 50, 70, 90]
    assert len(seen) == 4 and int(seen[1].mean()) == 20  # the policy sees the current observation
    # No pixels observed, but rendered: the frames come from env.render().
    rendered = GymnasiumFrames(ColorRooms(observe_pixels=False, render_mode="rgb_array"), 5, size=8)
    assert grays(rendered) == [0, 10, 20, 30, 40]


def test_gymnasium_dict_observations_and_env_ids(monkeypatch):
    class TwoCameras(ColorRooms):
        def __init__(self, cameras=("front",)):
            super().__init__()
            self.cameras = cameras
            images = {name: spaces.Box(0, 255, self.shape, np.uint8) for name in cameras}
            self.observation_space = spaces.Dict({"position": spaces.Box(-1, 1, (2,)), **images})

        def observation(self):
            frame = np.full(self.shape, self.gray(), np.uint8)
            return {"position": np.zeros(2, np.float32), **{name: frame for name in self.cameras}}

    assert grays(GymnasiumFrames(TwoCameras(), 3, size=8)) == [0, 10, 20]
    with pytest.raises(ValueError, match=r"several RGB images, \['back', 'front'\]; pass observation_key"):
        GymnasiumFrames(TwoCameras(("front", "back")), 3)
    assert len(GymnasiumFrames(TwoCameras(("front", "back")), 3, observation_key="back")) == 3
    with pytest.raises(ValueError, match=r"entry 'position' .* not an RGB image"):
        GymnasiumFrames(TwoCameras(), 3, observation_key="position")

    # An id string is made with render_mode="rgb_array" and closed afterwards.
    closed = []
    monkeypatch.setattr(ColorRooms, "close", lambda self: closed.append(True), raising=False)
    spec = gymnasium.envs.registration.EnvSpec(
        "VqgenTest/ColorRooms-v0", entry_point=ColorRooms, kwargs={"observe_pixels": False}
    )
    monkeypatch.setitem(gymnasium.registry, spec.id, spec)
    assert grays(GymnasiumFrames(spec.id, 3, size=8)) == [0, 10, 20] and closed == [True]


def test_gymnasium_errors():
    with pytest.raises(ValueError, match=r"observation space Discrete\(100\) is not an RGB image.*render_mode is None"):
        GymnasiumFrames(ColorRooms(observe_pixels=False), 4)
    with pytest.raises(ValueError, match="num_frames must be a positive integer"):
        GymnasiumFrames(ColorRooms(), 0)
    with pytest.raises(ValueError, match="frame_skip must be a positive integer"):
        GymnasiumFrames(ColorRooms(), 4, frame_skip=0)
