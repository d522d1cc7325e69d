"""Frame sources for stage one: first-person views of 3D worlds, for the VQ-VAE paper's DeepMind Lab
experiment (84x84x3 frames -> 21x21 codes) without DeepMind Lab, which does not build here.

Every source yields the image sources' items, `{"pixel_values": FloatTensor (3, size, size) in
[0, 1], "label": LongTensor scalar}` (label -1 when the source has none), `size` 84 by default.
Frames that are not `size` x `size` are resized to it whole (bicubic, antialiased when shrinking):
the aspect ratio is not kept, as is usual for agents' frames (DQN squeezed Atari's 210x160 too),
so that nothing at the edges of the view is cut off.

- `VizDoomFrames` (`vizdoom.py`), the built-in source: real first-person frames rendered headless
  by the ViZDoom engine on several maps, recorded once by an exploring agent into the cache.
- `GymnasiumFrames` records frames from any Gymnasium environment that observes, or renders, RGB
  images, e.g. DeepMind Lab's or MiniWorld's Gymnasium wrappers where they are installed.
- `FrameArrays` reads frames recorded elsewhere from a `.npy` or `.npz` array file.
- Folders of frame images and Hugging Face datasets of frames need nothing new: use
  `load_image_folder(path, 84, channels=3)` or `load_hub_image_dataset(name, split, 84, channels=3)`
  from `images.py`, which resize the shorter side and center-crop instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

DEFAULT_FRAME_SIZE = 84


# -- helpers ------------------------------------------------------------------------------------
def check_frame_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size!r}.")
    return int(size)


def _to_float_chw(frames: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 (0-255) or float (0-1) -> (N, 3, H, W) float32 in [0, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    return tensor.float() / 255.0 if tensor.dtype == torch.uint8 else tensor.float()


def _resize(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3, size, size) in [0, 1]: bicubic, antialiased like PIL's
    resize when shrinking, aspect ratio not kept; clipped, as bicubic overshoots at edges."""
    if frames.shape[-2:] == (size, size):
        return frames
    resized = F.interpolate(frames, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return resized.clamp_(0.0, 1.0)


def resize_to_uint8(frames: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size, size, 3) uint8, for storing recorded frames compactly."""
    resized = _resize(_to_float_chw(frames), size)
    return (resized * 255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def frame_item(frame: np.ndarray, label: int, size: int) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": _resize(_to_float_chw(frame[None]), size)[0],
        "label": torch.tensor(label, dtype=torch.long),
    }


# -- recorded frames -----------------------------------------------------------------------------
_FRAME_SHAPE = "(N, H, W, 3): N frames of height H and width W, RGB channels last"


def _check_frame_array(frames: np.ndarray, where: str) -> None:
    """ValueError unless `frames` is a non-empty (N, H, W, 3) array of uint8, or of floats in [0, 1]."""
    shape = tuple(frames.shape)
    hint = ""
    if len(shape) == 3 and shape[-1] == 3:
        hint = " It looks like a single frame: add a leading axis, e.g. `frames[None]`."
    elif len(shape) == 3:
        hint = " It looks like grayscale frames: repeat them into RGB, e.g. `np.repeat(frames[..., None], 3, axis=-1)`."
    elif len(shape) == 4 and shape[1] == 3 and shape[-1] != 3:
        hint = " It looks channels-first: move the channels last with `frames.transpose(0, 2, 3, 1)`."
    elif len(shape) == 4 and shape[-1] == 4:
        hint = " It looks like RGBA: drop the alpha channel with `frames[..., :3]`."
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{where} has shape {shape}, but frames must have shape {_FRAME_SHAPE}.{hint}")
    if shape[0] == 0 or shape[1] == 0 or shape[2] == 0:
        raise ValueError(f"{where} holds no frames (shape {shape}); record some frames first.")
    if frames.dtype == np.uint8:
        return
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(
            f"{where} has dtype {frames.dtype}, but frames must be uint8 (0-255) or floats in [0, 1]. "
            "Convert them, e.g. with `frames.astype(np.uint8)` when they hold 0-255."
        )
    low, high = float(np.min(frames)), float(np.max(frames))
    if not (0.0 <= low and high <= 1.0):  # also false for NaN
        raise ValueError(
            f"{where} holds floats from {low} to {high}, but float frames must lie in [0, 1]. Divide 0-255 values "
            "by 255, or store them as uint8."
        )


class FrameArrays(torch.utils.data.Dataset):
    """Frames from a `.npy` or `.npz` file: an array of shape (N, H, W, 3), RGB channels last, of
    uint8 (0-255) or of floats in [0, 1] (float16, float32 or float64); resized to `size` x `size`
    when H, W differ (see the module docstring).

    A `.npz` may also hold `labels`, N integers (else every label is -1), and `class_names`, the
    names of those labels as strings. Its frames are the array named `key`; by default the one
    named "frames", or else its only array other than those two. A `.npy` is memory-mapped, so
    frames are read from disk at each access; a `.npz` is read into memory.
    """

    def __init__(self, path: str | os.PathLike, size: int = DEFAULT_FRAME_SIZE, key: str | None = None):
        self.path = Path(path).expanduser()
        self.size = check_frame_size(size)
        if not self.path.is_file():
            raise FileNotFoundError(f"frame file {self.path} does not exist (or is not a file).")
        self.labels: np.ndarray | None = None
        self.class_names: list[str] | None = None
        suffix = self.path.suffix.lower()
        if suffix == ".npy":
            if key is not None:
                raise ValueError(
                    f"key={key!r} picks an array of a .npz file, but {self.path} is a .npy file of one array."
                )
            self.frames = np.load(self.path, mmap_mode="r", allow_pickle=False)
            _check_frame_array(self.frames, f"frame array {self.path}")
        elif suffix == ".npz":
            self._load_npz(key)
        else:
            raise ValueError(
                f"frame file {self.path} is neither .npy nor .npz; save the frames with np.save or np.savez."
            )

    def _load_npz(self, key: str | None) -> None:
        with np.load(self.path, allow_pickle=False) as arrays:
            keys = list(arrays.keys())
            extras = ("labels", "class_names")
            if key is None:
                candidates = [name for name in keys if name not in extras]
                if "frames" in keys:
                    key = "frames"
                elif len(candidates) == 1:
                    key = candidates[0]
                else:
                    raise ValueError(
                        f"{self.path} holds the arrays {keys}; pass key=... to say which holds the frames."
                        if candidates
                        else f"{self.path} holds no frame array, only {keys}; save the frames under the name 'frames'."
                    )
            if key not in keys:
                raise ValueError(f"{self.path} has no array {key!r}; its arrays are {keys}.")
            where = f"array {key!r} of {self.path}"
            self.frames = arrays[key]
            _check_frame_array(self.frames, where)
            if "labels" in keys:
                self.labels = self._check_labels(arrays["labels"])
            if "class_names" in keys:
                self.class_names = self._check_class_names(arrays["class_names"])

    def _check_labels(self, labels: np.ndarray) -> np.ndarray:
        if labels.ndim != 1 or labels.shape[0] != len(self.frames) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"'labels' of {self.path} must be {len(self.frames)} integers, one per frame, but it has shape "
                f"{labels.shape} and dtype {labels.dtype}."
            )
        return labels.astype(np.int64)

    def _check_class_names(self, names: np.ndarray) -> list[str]:
        if names.ndim != 1 or names.dtype.kind != "U":
            raise ValueError(
                f"'class_names' of {self.path} must be a 1-D array of strings, but it has shape {names.shape} and "
                f"dtype {names.dtype}."
            )
        if self.labels is not None and self.labels.max(initial=-1) >= len(names):
            raise ValueError(
                f"'labels' of {self.path} go up to {self.labels.max()}, but 'class_names' names only {len(names)} "
                "classes."
            )
        return names.tolist()

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} frames.")
        label = int(self.labels[index]) if self.labels is not None else -1
        return frame_item(np.array(self.frames[index]), label, self.size)  # a copy: a memory map is read-only


# -- recorded frames held in memory ----------------------------------------------------------------
class RecordedFrames(torch.utils.data.Dataset):
    """Frames recorded into memory at `size` x `size`, (N, size, size, 3) uint8, with labels."""

    frames: np.ndarray
    labels: np.ndarray
    size: int

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} frames.")
        return frame_item(self.frames[index], int(self.labels[index]), self.size)


# -- Gymnasium environments ------------------------------------------------------------------------
def _import_gymnasium() -> Any:
    try:
        import gymnasium
    except ImportError as exc:
        raise ImportError("GymnasiumFrames needs Gymnasium: `pip install gymnasium`.") from exc
    return gymnasium


def _is_rgb_space(space: Any) -> bool:
    from gymnasium import spaces

    return isinstance(space, spaces.Box) and len(space.shape) == 3 and space.shape[2] == 3 and space.dtype == np.uint8


class GymnasiumFrames(RecordedFrames):
    """`num_frames` frames of a Gymnasium environment, recorded into memory at `size` x `size`.

    `env` is an environment id (made with `gymnasium.make(env, render_mode="rgb_array")` and closed
    afterwards) or an `Env` (left open). The frames are its observations when its observation space
    is an RGB image, a `Box` of shape (H, W, 3) and dtype uint8, or that entry of a `Dict` space
    (`observation_key`, default the only such entry); else `env.render()` when the environment
    renders RGB arrays (`render_mode="rgb_array"`). For example, where installed:
    `GymnasiumFrames("MiniWorld-Maze-v0", 5000)`, or DeepMind Lab through its Gymnasium wrapper.

    Episodes run from `env.reset(seed=seed)` on; each step's action is `policy(observation)`, by
    default a random action of `env.action_space` (seeded with `seed`). Each action is repeated
    `frame_skip` times and the frame after the last repeat is kept; the first frame of an episode
    is the one of its reset. A terminated or truncated episode is recorded up to its last frame
    and followed by a reset. The label is the episode index, 0 for the first episode;
    `num_episodes` is how many episodes the frames come from.
    """

    def __init__(
        self,
        env: Any,
        num_frames: int,
        *,
        size: int = DEFAULT_FRAME_SIZE,
        seed: int = 0,
        policy: Callable[[Any], Any] | None = None,
        frame_skip: int = 1,
        observation_key: str | None = None,
    ):
        if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
            raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}.")
        if isinstance(frame_skip, bool) or not isinstance(frame_skip, (int, np.integer)) or frame_skip < 1:
            raise ValueError(f"frame_skip must be a positive integer (steps per kept frame), got {frame_skip!r}.")
        self.size = check_frame_size(size)
        self.class_names = None  # episode indices have no names
        owned = isinstance(env, str)
        if owned:
            env = _import_gymnasium().make(env, render_mode="rgb_array")
        try:
            frame_of = self._frame_getter(env, observation_key)
            self.frames, self.labels = self._record(env, frame_of, int(num_frames), seed, policy, int(frame_skip))
        finally:
            if owned:
                env.close()
        self.num_episodes = int(self.labels[-1]) + 1

    @staticmethod
    def _frame_getter(env: Any, observation_key: str | None) -> Callable[[Any], Any]:
        """A function from an observation to the RGB frame to keep."""
        from gymnasium import spaces

        space = env.observation_space
        name = getattr(getattr(env, "spec", None), "id", None) or type(getattr(env, "unwrapped", env)).__name__
        if observation_key is not None:
            if not isinstance(space, spaces.Dict) or observation_key not in space.spaces:
                known = list(space.spaces) if isinstance(space, spaces.Dict) else None
                raise ValueError(
                    f"observation_key={observation_key!r} names no entry of {name}'s observation space {space}"
                    + (f"; its entries are {known}." if known else ", which is not a Dict space.")
                )
            if not _is_rgb_space(space[observation_key]):
                raise ValueError(
                    f"entry {observation_key!r} of {name}'s observations is {space[observation_key]}, not an RGB "
                    "image (a Box of shape (H, W, 3) and dtype uint8)."
                )
            return lambda observation: observation[observation_key]
        if _is_rgb_space(space):
            return lambda observation: observation
        if isinstance(space, spaces.Dict):
            images = [key for key, entry in space.spaces.items() if _is_rgb_space(entry)]
            if len(images) == 1:
                return lambda observation: observation[images[0]]
            if len(images) > 1:
                raise ValueError(
                    f"{name}'s observations hold several RGB images, {images}; pass observation_key=... to pick one."
                )
        if getattr(env, "render_mode", None) == "rgb_array":
            return lambda observation: env.render()
        raise ValueError(
            f"{name}'s observation space {space} is not an RGB image (a Box of shape (H, W, 3) and dtype uint8) "
            f"and its render_mode is {getattr(env, 'render_mode', None)!r}, not 'rgb_array', so it yields no frames. "
            "Make it with gymnasium.make(id, render_mode='rgb_array'), or pass its id string, which does."
        )

    def _record(
        self,
        env: Any,
        frame_of: Callable[[Any], Any],
        num_frames: int,
        seed: int,
        policy: Callable[[Any], Any] | None,
        frame_skip: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        if policy is None:
            env.action_space.seed(seed)
            policy = lambda observation: env.action_space.sample()  # noqa: E731
        frames = np.empty((num_frames, self.size, self.size, 3), dtype=np.uint8)
        episodes = np.empty(num_frames, dtype=np.int64)
        pending: list[np.ndarray] = []  # frames at their own size, resized in chunks
        episode, count = 0, 0

        def keep(observation: Any) -> None:
            nonlocal count
            frame = frame_of(observation)
            if not isinstance(frame, np.ndarray):
                raise ValueError(f"frame {count} of the environment is a {type(frame).__name__}, not a numpy array.")
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(
                    f"frame {count} of the environment has shape {frame.shape} and dtype {frame.dtype}, but frames "
                    "must be RGB images of shape (H, W, 3) and dtype uint8."
                )
            pending.append(np.array(frame))  # a copy: environments may reuse their observation's buffer
            episodes[count] = episode
            count += 1
            if len(pending) == 256 or count == num_frames:
                frames[count - len(pending) : count] = resize_to_uint8(np.stack(pending), self.size)
                pending.clear()

        with tqdm(total=num_frames, desc="Recording frames", unit="frame") as progress:
            observation, _ = env.reset(seed=seed)
            keep(observation)
            progress.update()
            while count < num_frames:
                action = policy(observation)
                for _ in range(frame_skip):
                    observation, _, terminated, truncated, _ = env.step(action)
                    if terminated or truncated:
                        break
                keep(observation)
                progress.update()
                if (terminated or truncated) and count < num_frames:
                    episode += 1
                    observation, _ = env.reset()
                    keep(observation)
                    progress.update()
        return frames, episodes
