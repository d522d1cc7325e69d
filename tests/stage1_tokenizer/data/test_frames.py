"""Frame sources: frame array files and Gymnasium environments (ViZDoom: test_vizdoom.py)."""

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces
from PIL import Image

from stage1_tokenizer.data import FrameArrays, GymnasiumFrames


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
