"""The built-in frame source: first-person frames of 3D maps rendered headless by the ViZDoom
engine (Doom with the Freedoom game data, both in the `vizdoom` wheel), recorded once by an
exploring agent into the cache: an offline stand-in for DeepMind Lab's frames.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .cache import cache_entry, cache_root, settings_key
from .frames import DEFAULT_FRAME_SIZE, RecordedFrames, check_frame_size, frame_item, resize_to_uint8

logger = logging.getLogger(__name__)

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
        frames[count : count + len(screens)] = resize_to_uint8(np.stack(screens), size)
        episodes[count : count + len(screens)] = episode
        count += len(screens)
        episode += 1
        progress.update(len(screens))


class VizDoomFrames(RecordedFrames):
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
        self.split, self.size, self.seed = split, check_frame_size(size), int(seed)
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

        root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
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
        path = self.directory / f"{scenario}-{self.split}-{settings_key(metadata)}.npz"
        if not path.exists():
            self._record(scenario, num_frames, metadata, path)
        return self._read(path, metadata)

    def _record(self, scenario: str, num_frames: int, metadata: dict[str, Any], path: Path) -> None:
        # The split and the map name seed the engine and the agent, not the map's position in
        # `scenarios`: a map's frames do not depend on which other maps are asked for.
        split_index = ("train", "test").index(self.split)
        seed_sequence = np.random.SeedSequence([self.seed, split_index, zlib.crc32(scenario.encode())])
        with tqdm(total=num_frames, desc=f"Recording ViZDoom {scenario} ({self.split})", unit="frame") as progress:
            start = time.perf_counter()
            frames, episodes = _record_scenario(scenario, num_frames, self.size, seed_sequence, progress)
            seconds = time.perf_counter() - start
        logger.info(
            "Recorded %d ViZDoom frames of %s in %.1f s (%.0f frames/s).",
            num_frames, scenario, seconds, num_frames / seconds,
        )  # fmt: skip
        with cache_entry(path) as partial, open(partial, "xb") as file:
            np.savez_compressed(file, frames=frames, episodes=episodes, metadata=np.array(json.dumps(metadata)))

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
