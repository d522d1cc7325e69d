"""Frame sources for stage one: first-person views of 3D worlds, for the VQ-VAE paper's DeepMind Lab
experiment (84x84x3 frames -> 21x21 codes) without DeepMind Lab, which does not build here.

Every source yields the image sources' items, `{"pixel_values": FloatTensor (3, size, size) in
[0, 1], "label": LongTensor scalar}` (label -1 when the source has none), `size` 84 by default.
Frames that are not `size` x `size` are resized to it whole (bicubic, antialiased when shrinking):
the aspect ratio is not kept, as is usual for agents' frames (DQN squeezed Atari's 210x160 too),
so that nothing at the edges of the view is cut off.

- `VizDoomFrames`, the built-in source: real first-person frames rendered headless by the ViZDoom
  engine (`pip install vizdoom`, which ships the Freedoom game data), on several maps, recorded
  once by an exploring agent into a cache. The label is the map.
- `GymnasiumFrames` records frames from any Gymnasium environment that observes, or renders, RGB
  images, e.g. DeepMind Lab's or MiniWorld's Gymnasium wrappers where they are installed.
- `FrameArrays` reads frames recorded elsewhere from a `.npy` or `.npz` array file.
- Folders of frame images and Hugging Face datasets of frames need nothing new: use
  `load_image_folder(path, 84, channels=3)` or `load_hub_image_dataset(name, split, 84, channels=3)`
  from `images.py`, which resize the shorter side and center-crop instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .audio import _default_cache_root

logger = logging.getLogger(__name__)

DEFAULT_FRAME_SIZE = 84


# -- helpers ------------------------------------------------------------------------------------
def _check_size(size: int) -> int:
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


def _resize_to_uint8(frames: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size, size, 3) uint8, for storing recorded frames compactly."""
    resized = _resize(_to_float_chw(frames), size)
    return (resized * 255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _item(frame: np.ndarray, label: int, size: int) -> dict[str, torch.Tensor]:
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
        self.size = _check_size(size)
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
        return _item(np.array(self.frames[index]), label, self.size)  # a copy: a memory map is read-only


# -- recorded frames held in memory ----------------------------------------------------------------
class _RecordedFrames(torch.utils.data.Dataset):
    """Frames recorded into memory at `size` x `size`, (N, size, size, 3) uint8, with labels."""

    frames: np.ndarray
    labels: np.ndarray
    size: int

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} frames.")
        return _item(self.frames[index], int(self.labels[index]), self.size)


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


class GymnasiumFrames(_RecordedFrames):
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
        self.size = _check_size(size)
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
                frames[count - len(pending) : count] = _resize_to_uint8(np.stack(pending), self.size)
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


# -- ViZDoom ---------------------------------------------------------------------------------------
# The single-player scenarios ViZDoom ships, each a `<name>.cfg` with its map.
_PACKAGED_SCENARIOS = (
    "basic", "deadly_corridor", "deathmatch", "defend_the_center", "defend_the_line", "health_gathering",
    "health_gathering_supreme", "my_way_home", "predict_position", "rocket_basic", "take_cover",
)  # fmt: skip
# name -> (config file in vizdoom.scenarios_path, map in its WAD or None for the config's own):
# those scenarios, and the 32 maps of the Freedoom: Phase 2 game.
VIZDOOM_SCENARIOS: dict[str, tuple[str, str | None]] = {
    **{name: (f"{name}.cfg", None) for name in _PACKAGED_SCENARIOS},
    **{f"freedoom2_map{number:02d}": ("freedoom2.cfg", f"map{number:02d}") for number in range(1, 33)},
}
# Six maps that look unlike each other: green acid floor and gray stone maze; round tan arena
# under a night sky; a maze of rooms, each in its own textures; gray tech room under rows of red
# lamps; white marble room under yellow lights; brick and blue-sky rooms with red carpets.
# Frames of one are told from the others' by their colors alone, far above chance.
DEFAULT_VIZDOOM_SCENARIOS = (
    "health_gathering_supreme", "defend_the_center", "my_way_home", "predict_position", "rocket_basic", "deathmatch",
)  # fmt: skip
# Default frames per scenario of each split.
VIZDOOM_TRAIN_FRAMES = 1000
VIZDOOM_TEST_FRAMES = 100
EPISODE_FRAMES = 100  # frames per episode, unless the map ends it first
_TICS_PER_FRAME = 4  # game tics (1/35 s) per action and kept frame, as in Atari's and DMLab's agents
# Bump when recording or storage changes, so old caches are not read as new ones.
_CACHE_FORMAT = 1

# The agent's buttons on every map, in place of each scenario's own, which on some maps only
# turn or only strafe: (forward, turn left, turn right, strafe left, strafe right).
_FORWARD, _TURN_LEFT, _TURN_RIGHT, _STRAFE_LEFT, _STRAFE_RIGHT = range(5)
# Depth buffer units are about 5 map units; the agent walks about 25 map units per frame.
_NEAR_DEPTH = 16  # turn away when the wall ahead is this close: about three frames of walking
_CLEAR_DEPTH = 28  # and keep turning until the view ahead is this deep again
_FULL_TURN_FRAMES = 26  # frames of turning for 360 degrees (14 degrees per frame)


def _start_doom_game(scenario: str, seed: int, work_dir: Path) -> Any:
    """A headless `vizdoom.DoomGame` on `scenario`, started: 160x120 RGB (the smallest screen),
    depth buffer and position for the policy, the navigation buttons, no HUD, no weapon, no
    episode time limit, cheats on (the recorder plays in god mode so that no death cuts an episode).
    The engine keeps its files in `work_dir`, which must outlive the game."""
    try:
        import vizdoom
    except ImportError as exc:
        raise ImportError("VizDoomFrames needs ViZDoom: `pip install vizdoom`.") from exc
    config, doom_map = VIZDOOM_SCENARIOS[scenario]
    config_path = Path(vizdoom.scenarios_path) / config
    if not config_path.is_file():
        raise FileNotFoundError(
            f"ViZDoom scenario {scenario!r} needs {config_path}, which this vizdoom ({vizdoom.__version__}) lacks. "
            "Pick another scenario, or install another vizdoom version."
        )
    game = vizdoom.DoomGame()
    game.load_config(str(config_path))
    if doom_map is not None:
        game.set_doom_map(doom_map)
    game.set_window_visible(False)
    game.set_mode(vizdoom.Mode.PLAYER)
    game.set_screen_format(vizdoom.ScreenFormat.RGB24)
    game.set_screen_resolution(vizdoom.ScreenResolution.RES_160X120)
    game.set_depth_buffer_enabled(True)
    for setting in ("render_hud", "render_weapon", "render_messages", "automap_buffer_enabled", "audio_buffer_enabled"):
        getattr(game, f"set_{setting}")(False)
    button = vizdoom.Button
    game.set_available_buttons(
        [button.MOVE_FORWARD, button.TURN_LEFT, button.TURN_RIGHT, button.MOVE_LEFT, button.MOVE_RIGHT]
    )
    game.set_available_game_variables([vizdoom.GameVariable.POSITION_X, vizdoom.GameVariable.POSITION_Y])
    game.set_episode_timeout(0)
    game.add_game_args("+sv_cheats 1")
    game.set_seed(seed)
    # The engine writes its settings (_vizdoom.ini) and a _vizdoom/ folder into its working
    # directory, which it inherits when init() starts it: start it in `work_dir`, not the user's.
    # (The working directory is the whole process's, for the fraction of a second init takes.)
    game.set_doom_config_path(str(work_dir / "_vizdoom.ini"))
    previous = os.getcwd()
    os.chdir(work_dir)
    try:
        game.init()
    finally:
        os.chdir(previous)
    return game


class _Explorer:
    """The recording agent: walks forward for random stretches, between which it turns left or
    right (70%) or strafes (30%) for 2-9 frames, so that it roams the map rather than its first
    corridor. When the wall ahead comes within `_NEAR_DEPTH` (the depth buffer's median over the
    center of the view), or walking forward did not move it (stuck on a corner or a monster), it
    turns towards the deeper side of the view (the other one 20% of the time) until the view
    ahead is `_CLEAR_DEPTH` deep, so that it rarely stares at a wall."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def begin_episode(self) -> None:
        self.plan, self.remaining, self.direction = "forward", int(self.rng.integers(4, 20)), 1
        self.position: np.ndarray | None = None
        self.avoiding_for = 0

    def act(self, depth: np.ndarray, position: np.ndarray) -> list[int]:
        rng = self.rng
        height, width = depth.shape
        ahead = float(np.median(depth[height * 3 // 8 : height * 5 // 8, width * 3 // 8 : width * 5 // 8]))
        stuck = self.plan == "forward" and self.position is not None and np.hypot(*(position - self.position)) < 3.0
        self.position = position
        if self.plan == "avoid":
            self.avoiding_for += 1
            # After a full turn without a clear view (a tight spot), walk on anyway.
            if ahead >= _CLEAR_DEPTH or self.avoiding_for > _FULL_TURN_FRAMES:
                self.plan, self.remaining = "forward", int(rng.integers(4, 20))
        elif ahead < _NEAR_DEPTH or stuck:
            left, right = depth[:, : width // 3].mean(), depth[:, -(width // 3) :].mean()
            self.plan, self.avoiding_for = "avoid", 0
            self.direction = -1 if left > right else 1
            if rng.random() < 0.2:
                self.direction = -self.direction
        elif self.remaining <= 0:
            if self.plan != "forward":
                self.plan, self.remaining = "forward", int(rng.integers(4, 20))
            else:
                self.plan = "turn" if rng.random() < 0.7 else "strafe"
                self.remaining, self.direction = int(rng.integers(2, 10)), int(rng.choice([-1, 1]))
        self.remaining -= 1

        action = [0] * 5
        if self.plan == "forward":
            action[_FORWARD] = 1
        elif self.plan in ("turn", "avoid"):
            action[_TURN_LEFT if self.direction < 0 else _TURN_RIGHT] = 1
            action[_FORWARD] = int(self.plan == "turn" and rng.random() < 0.5)  # curve, or turn on the spot
        else:
            action[_STRAFE_LEFT if self.direction < 0 else _STRAFE_RIGHT] = 1
            action[_FORWARD] = int(rng.random() < 0.5)
        return action

    def face_random_direction(self, game: Any) -> None:
        """Turns the agent by a random angle, unrecorded, so that episodes leave the (mostly
        fixed) spawn point in different directions."""
        frames = int(self.rng.integers(0, _FULL_TURN_FRAMES))
        if frames:
            turn = [0] * 5
            turn[_TURN_LEFT] = 1
            game.make_action(turn, frames * _TICS_PER_FRAME)


def _record_scenario(
    scenario: str, num_frames: int, size: int, seed_sequence: np.random.SeedSequence, progress: tqdm
) -> tuple[np.ndarray, np.ndarray]:
    """`num_frames` frames of `scenario` at `size` x `size`, uint8, and their episode indices."""
    game_seed = int(seed_sequence.generate_state(1)[0])
    explorer = _Explorer(np.random.default_rng(seed_sequence))
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    episodes = np.empty(num_frames, dtype=np.int32)
    with tempfile.TemporaryDirectory(prefix="vizdoom-") as work_dir:
        game = _start_doom_game(scenario, game_seed, Path(work_dir))
        try:
            _play(game, explorer, frames, episodes, scenario, progress)
        finally:
            game.close()
    return frames, episodes


def _play(
    game: Any, explorer: _Explorer, frames: np.ndarray, episodes: np.ndarray, scenario: str, progress: tqdm
) -> None:
    """Fills `frames` (N, size, size, 3) and `episodes` with episodes of `explorer` playing `game`."""
    num_frames, size = len(frames), frames.shape[1]
    count, episode = 0, 0
    while count < num_frames:
        game.new_episode()
        game.send_game_command("god")
        explorer.face_random_direction(game)
        explorer.begin_episode()
        screens = []
        while len(screens) < min(EPISODE_FRAMES, num_frames - count) and not game.is_episode_finished():
            state = game.get_state()
            screens.append(np.array(state.screen_buffer))  # a copy: never a view of the engine's buffer
            game.make_action(explorer.act(state.depth_buffer, np.asarray(state.game_variables)), _TICS_PER_FRAME)
        if not screens:
            raise RuntimeError(
                f"ViZDoom scenario {scenario!r} ended its episode before the first frame; pick another scenario."
            )
        frames[count : count + len(screens)] = _resize_to_uint8(np.stack(screens), size)
        episodes[count : count + len(screens)] = episode
        count += len(screens)
        episode += 1
        progress.update(len(screens))


class VizDoomFrames(_RecordedFrames):
    """First-person frames of 3D maps, rendered headless by the ViZDoom engine (Doom with the
    Freedoom game data, both in the `vizdoom` wheel): an offline stand-in for DeepMind Lab's frames.

    `scenarios` names the maps (`VIZDOOM_SCENARIOS`: ViZDoom's scenarios and the Freedoom: Phase 2
    maps, "freedoom2_map01" to "freedoom2_map32"), default `DEFAULT_VIZDOOM_SCENARIOS`, six maps
    that look unlike each other. The label is the map's position in `scenarios`, named by
    `class_names`. `num_frames` frames in all are shared evenly between the maps (the first maps
    get one more when they do not divide); the default is `VIZDOOM_TRAIN_FRAMES` (1000) per map for
    "train" and `VIZDOOM_TEST_FRAMES` (100) per map for "test". Items are map-major, and within a
    map consecutive items are consecutive frames of an episode; `episodes` holds each frame's
    episode index within its map.

    An agent (see `_Explorer`) explores each map in episodes of `EPISODE_FRAMES` (100) frames, an
    action and a frame every 4 game tics (1/35 s each). It plays in god mode, so that monsters
    and acid floors never end an episode; maps whose own script ends the episode (reaching
    my_way_home's goal) start the next one early. Each episode starts facing a random direction.
    The 160x120 screen is resized to `size` x `size`. The engine and the agent are seeded from
    (`seed`, split, map name), so "test" holds other episodes than "train" on the same maps.

    The frames are recorded once per map and split into `cache_dir` (default `$VQGEN_CACHE`, else
    `~/.cache/vqgen`), as `vizdoom/<map>-<split>-<hash of the settings>.npz` (uint8 frames and
    episode indices); later constructions with the same settings read them from there. Each file
    is written under a temporary name and renamed when complete, so an interrupted run leaves
    nothing that passes for a finished cache. The default train split takes about 15 s to make on
    two CPU cores (the engine, the agent and resizing run at about 1000 frames/s; compressing the
    files takes as long) and 65 MB on disk; its frames are held in memory, 127 MB.
    """

    def __init__(
        self,
        split: str = "train",
        num_frames: int | None = None,
        *,
        size: int = DEFAULT_FRAME_SIZE,
        scenarios: Sequence[str] | None = None,
        cache_dir: str | os.PathLike | None = None,
        seed: int = 0,
    ):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
        self.split, self.size, self.seed = split, _check_size(size), int(seed)
        self.class_names = self._pick_scenarios(scenarios)
        per_map = VIZDOOM_TRAIN_FRAMES if split == "train" else VIZDOOM_TEST_FRAMES
        total = num_frames if num_frames is not None else per_map * len(self.class_names)
        if isinstance(total, bool) or not isinstance(total, (int, np.integer)) or total < len(self.class_names):
            raise ValueError(
                f"num_frames must be an integer of at least one frame per scenario ({len(self.class_names)}), got "
                f"{num_frames!r}."
            )
        base, extra = divmod(int(total), len(self.class_names))
        counts = [base + (index < extra) for index in range(len(self.class_names))]

        root = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_root()
        self.directory = root / "vizdoom"
        parts = [self._load_or_record(scenario, count) for scenario, count in zip(self.class_names, counts)]
        self.frames = np.concatenate([frames for frames, _ in parts])
        self.episodes = np.concatenate([episodes for _, episodes in parts]).astype(np.int64)
        self.labels = np.repeat(np.arange(len(self.class_names)), counts)

    @staticmethod
    def _pick_scenarios(scenarios: Sequence[str] | None) -> list[str]:
        if scenarios is None:
            return list(DEFAULT_VIZDOOM_SCENARIOS)
        if isinstance(scenarios, str):
            scenarios = [scenarios]
        unknown = [name for name in scenarios if name not in VIZDOOM_SCENARIOS]
        if unknown:
            raise ValueError(f"unknown ViZDoom scenarios {unknown}; the known ones are {list(VIZDOOM_SCENARIOS)}.")
        if not scenarios or len(set(scenarios)) != len(scenarios):
            raise ValueError(f"scenarios must be a non-empty list of distinct names, got {list(scenarios)}.")
        return list(scenarios)

    def _metadata(self, scenario: str, num_frames: int) -> dict[str, Any]:
        config, doom_map = VIZDOOM_SCENARIOS[scenario]
        return {
            "format": _CACHE_FORMAT,
            "scenario": scenario,
            "config": config,
            "map": doom_map,
            "split": self.split,
            "num_frames": num_frames,
            "size": self.size,
            "seed": self.seed,
            "episode_frames": EPISODE_FRAMES,
            "tics_per_frame": _TICS_PER_FRAME,
        }

    def _load_or_record(self, scenario: str, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
        metadata = self._metadata(scenario, num_frames)
        key = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()[:16]
        path = self.directory / f"{scenario}-{self.split}-{key}.npz"
        if not path.exists():
            self._record(scenario, num_frames, metadata, path)
        return self._read(path, metadata)

    def _record(self, scenario: str, num_frames: int, metadata: dict[str, Any], path: Path) -> None:
        # The split and the map name seed the engine and the agent, not the map's position in
        # `scenarios`: a map's frames do not depend on which other maps are asked for.
        split_index = ("train", "test").index(self.split)
        seed_sequence = np.random.SeedSequence([self.seed, split_index, zlib.crc32(scenario.encode())])
        self.directory.mkdir(parents=True, exist_ok=True)
        # A name of our own rather than mkstemp's, whose files only their owner may read.
        partial = self.directory / f".{path.stem}.partial-{os.getpid()}-{secrets.token_hex(4)}.npz"
        try:
            with tqdm(total=num_frames, desc=f"Recording ViZDoom {scenario} ({self.split})", unit="frame") as progress:
                start = time.perf_counter()
                frames, episodes = _record_scenario(scenario, num_frames, self.size, seed_sequence, progress)
                seconds = time.perf_counter() - start
            logger.info(
                "Recorded %d ViZDoom frames of %s in %.1f s (%.0f frames/s).",
                num_frames, scenario, seconds, num_frames / seconds,
            )  # fmt: skip
            with open(partial, "xb") as file:
                np.savez_compressed(file, frames=frames, episodes=episodes, metadata=np.array(json.dumps(metadata)))
            os.replace(partial, path)  # another process writing the same file first is fine: same settings
        finally:
            partial.unlink(missing_ok=True)  # gone already after a successful rename

    def _read(self, path: Path, metadata: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as arrays:
                stored = json.loads(str(arrays["metadata"]))
                frames, episodes = arrays["frames"], arrays["episodes"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(
                f"{path} is not a complete ViZDoom frame cache ({type(exc).__name__}: {exc}). Delete it to record "
                "the frames again."
            ) from exc
        expected = (metadata["num_frames"], self.size, self.size, 3)
        if stored != metadata or frames.shape != expected or episodes.shape != expected[:1]:
            raise ValueError(
                f"{path} holds other frames than these settings ask for ({frames.shape} frames, recorded with "
                f"{stored}). Delete it to record the frames again."
            )
        return frames, episodes
