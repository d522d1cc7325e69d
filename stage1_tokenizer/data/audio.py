"""Audio sources for stage one: Hugging Face audio datasets, local audio folders, an offline
synthetic speech corpus, and fixed-length crops for training.

Every source yields `{"input_values": FloatTensor (1, T) float32 in [-1, 1], "speaker": LongTensor
scalar}`: a mono waveform at the source's `sampling_rate` and a speaker id (-1 when the source has
none). Every source also has `sampling_rate` (int), `speakers` (speaker names, id = position; None
when the ids have no names) and a length.

- `read_audio` reads one file (path, bytes, or a `datasets` `{"bytes", "path"}` dict) with
  soundfile and resamples it with torchaudio. It never mixes channels silently (pass
  `mix_to_mono=True` to average them) and refuses empty and all-silent files.
- `AudioDataset` wraps a `datasets.Dataset` with an audio column. It decodes the files itself,
  since `datasets` 5.x decodes audio through torchcodec, and with `on_bad_audio="skip"` it drops
  unreadable or silent files up front so that no epoch dies halfway.
- `load_audio_folder` reads a folder of speaker subfolders offline (`root/alice/1.wav` -> "alice").
- `load_hub_audio_dataset` reads a dataset from the Hugging Face Hub (needs the network once).
- `SyntheticSpeech` is a small parallel corpus, offline: template sentences spoken by the
  `SYNTHETIC_SPEAKERS` voices of the espeak-ng synthesizer, generated once into a cache.
- `AudioCrops` cuts any source into fixed-length segments: random ones for training, centered
  ones for evaluation.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import numbers
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Union

import datasets
import numpy as np
import soundfile
import torch
import torchaudio.functional as AF
from tqdm.auto import tqdm

from .hf_datasets import (
    find_label_column,
    find_media_column,
    label_vocabulary,
    load_hub_split,
)

logger = logging.getLogger(__name__)

AudioSource = Union[str, os.PathLike, bytes, bytearray, Mapping[str, Any]]

_BAD_AUDIO_POLICIES = ("raise", "skip")
# Below this peak a file holds no usable sound (16-bit PCM's smallest step is 3e-5).
SILENCE_PEAK = 1e-4
_SPEAKER_COLUMNS = ("speaker_id", "speaker", "label")


# -- reading one file ---------------------------------------------------------------------------
class _ChannelMismatch(ValueError):
    """Several channels where one is expected: a setting to change, not a bad file, so datasets
    raise it under any `on_bad_audio` policy."""


def _check_sampling_rate(sampling_rate: int) -> int:
    """Returns `sampling_rate` as an int; ValueError unless it is a positive integer."""
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, numbers.Integral) or sampling_rate <= 0:
        raise ValueError(f"sampling_rate must be a positive integer (samples per second), got {sampling_rate!r}.")
    return int(sampling_rate)


def _describe_source(source: AudioSource) -> str:
    if isinstance(source, Mapping):
        path = source.get("path")
        return f"audio file {path}" if path else "audio bytes"
    if isinstance(source, (bytes, bytearray)):
        return "audio bytes"
    return f"audio file {os.fspath(source)}"


def _decode(source: AudioSource, label: str) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 samples and their rate; ValueError for unreadable or empty files."""
    if isinstance(source, Mapping):
        if source.get("bytes") is not None:
            source = source["bytes"]
        elif source.get("path") is not None:
            source = source["path"]
        else:
            raise ValueError(f"{label} holds no audio (neither bytes nor path). Remove the row or fill it in.")
    file = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    try:
        samples, rate = soundfile.read(file, dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError, OSError) as exc:  # LibsndfileError is a RuntimeError
        raise ValueError(
            f"{label} could not be read as audio (soundfile: {exc}). Replace or remove it, or convert it to "
            "WAV or FLAC (e.g. `ffmpeg -i in.m4a out.wav`)."
        ) from exc
    if samples.shape[0] == 0:
        raise ValueError(f"{label} holds no samples (0 frames). Remove it or replace it with a non-empty recording.")
    return samples, rate


def _to_mono(samples: np.ndarray, label: str, mix_to_mono: bool) -> np.ndarray:
    channels = samples.shape[1]
    if channels == 1:
        return samples[:, 0]
    if not mix_to_mono:
        raise _ChannelMismatch(
            f"{label} has {channels} channels but mono audio is expected. Pass mix_to_mono=True to average "
            "the channels into one, or convert the file to mono."
        )
    return samples.mean(axis=1)


def _check_audible(mono: np.ndarray, label: str) -> None:
    peak = float(np.abs(mono).max())
    if peak < SILENCE_PEAK:
        raise ValueError(
            f"{label} contains only silence (peak amplitude {peak:.1e} < {SILENCE_PEAK:g}). Remove it, or check "
            "the recording or export that produced it."
        )


def _load_mono(source: AudioSource, label: str, mix_to_mono: bool) -> tuple[np.ndarray, int]:
    samples, rate = _decode(source, label)
    mono = _to_mono(samples, label, mix_to_mono)
    _check_audible(mono, label)
    return mono, rate


def _resample(waveform: torch.Tensor, rate: int, sampling_rate: int) -> torch.Tensor:
    if rate != sampling_rate:
        waveform = AF.resample(waveform, rate, sampling_rate)
    # The resampling filter can overshoot full scale a little; the contract is [-1, 1].
    return waveform.clamp_(-1.0, 1.0)


def read_audio(
    source: AudioSource, sampling_rate: int, *, mix_to_mono: bool = False, name: str | None = None
) -> torch.Tensor:
    """One audio file as a mono float32 waveform (1, T) in [-1, 1] at `sampling_rate`.

    `source` is a path, the file's bytes, or a `datasets` `{"bytes", "path"}` dict (bytes first).
    Any format soundfile reads (WAV, FLAC, OGG, MP3, ...). A file at another rate is resampled
    (torchaudio's windowed-sinc `resample`); samples beyond full scale are clipped to [-1, 1].

    Multi-channel audio raises ValueError unless `mix_to_mono=True`, which averages the channels.
    Unreadable files, files of 0 samples and all-silent ones (peak below `SILENCE_PEAK`) raise
    ValueError too. `name` is how errors refer to the source (default: its path, or "audio bytes").
    """
    sampling_rate = _check_sampling_rate(sampling_rate)
    mono, rate = _load_mono(source, name or _describe_source(source), mix_to_mono)
    return _resample(torch.from_numpy(np.ascontiguousarray(mono))[None], rate, sampling_rate)


# -- Hugging Face audio datasets ------------------------------------------------------------------
class AudioDataset(torch.utils.data.Dataset):
    """A `datasets.Dataset` with an audio column, as mono waveforms in [-1, 1] at `sampling_rate`.

    The audio column is the first `datasets.Audio` feature unless `audio_column` names one. The
    speaker column is `speaker_column`, else the first ClassLabel column, else one named
    "speaker_id", "speaker" or "label" (none: every speaker id is -1). `speakers` holds the
    ClassLabel names, or the sorted distinct values of a string column (ids follow that order);
    an integer column's values are the ids as they are, with `speakers` None.

    Files are decoded here with soundfile (`read_audio`), not by `datasets`, whose audio decoding
    needs torchcodec. Multi-channel files raise ValueError unless `mix_to_mono=True`.

    The constructor reads every file once (a progress bar), so that problems surface before
    training: `on_bad_audio="raise"` (default) raises ValueError at the first unreadable, empty
    or silent file, naming it; `on_bad_audio="skip"` drops those and lists them in `skipped` as
    `(row index, reason)`; indices of this dataset then run over the good rows only. Waveforms are
    decoded again, and resampled, at each access, so memory stays small for large corpora.
    """

    def __init__(
        self,
        hf_dataset: datasets.Dataset,
        sampling_rate: int,
        audio_column: str | None = None,
        speaker_column: str | None = None,
        on_bad_audio: str = "raise",
        mix_to_mono: bool = False,
    ):
        if on_bad_audio not in _BAD_AUDIO_POLICIES:
            raise ValueError(f"on_bad_audio must be one of {_BAD_AUDIO_POLICIES}, got {on_bad_audio!r}.")
        self.sampling_rate = _check_sampling_rate(sampling_rate)
        self.on_bad_audio = on_bad_audio
        self.mix_to_mono = mix_to_mono
        self.audio_column = find_media_column(hf_dataset, audio_column, datasets.Audio, "audio_column")
        self.speaker_column = find_label_column(hf_dataset, speaker_column, _SPEAKER_COLUMNS, "speaker_column")
        self.speakers, self._speaker_ids = label_vocabulary(hf_dataset, self.speaker_column, "speaker_column")

        # Keep {"bytes", "path"}: decoding with decode=True would need torchcodec.
        columns = [self.audio_column] + ([self.speaker_column] if self.speaker_column else [])
        self._rows = hf_dataset.select_columns(columns).cast_column(self.audio_column, datasets.Audio(decode=False))

        self.skipped: list[tuple[int, str]] = []
        self._indices: list[int] = self._check_audio()

    # -- decoding -----------------------------------------------------------------------------------
    @staticmethod
    def _row_label(row_index: int, value: Mapping[str, Any] | None) -> str:
        path = value.get("path") if isinstance(value, Mapping) else None
        return f"audio row {row_index} ({path})" if path else f"audio row {row_index}"

    def _check_audio(self) -> list[int]:
        """Indices of the good rows; with on_bad_audio="raise", the first bad one raises."""
        keep: list[int] = []
        audio = self._rows.select_columns([self.audio_column])
        for index, row in enumerate(tqdm(audio, desc="Checking audio", unit="file", total=len(audio))):
            value = row[self.audio_column]
            try:
                _load_mono(value or {}, self._row_label(index, value), self.mix_to_mono)
            except _ChannelMismatch:
                raise
            except ValueError as exc:
                if self.on_bad_audio == "raise":
                    raise ValueError(
                        f"{exc} Or pass on_bad_audio='skip' to drop unreadable, empty and silent files when the "
                        "dataset is built."
                    ) from exc
                self.skipped.append((index, str(exc)))
                continue
            keep.append(index)
        if self.skipped:
            first_index, first_reason = self.skipped[0]
            logger.warning(
                "Skipped %d of %d unreadable, empty or silent audio files (first: row %d: %s); see `.skipped`.",
                len(self.skipped), len(audio), first_index, first_reason,
            )  # fmt: skip
        if not keep:
            raise ValueError(f"none of the {len(audio)} audio files could be used; first failure: {self.skipped[0][1]}")
        return keep

    # -- Dataset ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} audio files.")
        row_index = self._indices[index]
        row = self._rows[row_index]
        value = row[self.audio_column]
        waveform = read_audio(
            value or {}, self.sampling_rate, mix_to_mono=self.mix_to_mono, name=self._row_label(row_index, value)
        )
        return {"input_values": waveform, "speaker": self._speaker(row)}

    def _speaker(self, row: dict[str, Any]) -> torch.Tensor:
        if self.speaker_column is None or row[self.speaker_column] is None:
            return torch.tensor(-1, dtype=torch.long)
        value = row[self.speaker_column]
        return torch.tensor(self._speaker_ids[value] if self._speaker_ids is not None else value, dtype=torch.long)


# -- loaders ---------------------------------------------------------------------------------------
def _audio_extensions() -> list[str]:
    from datasets.packaged_modules.audiofolder.audiofolder import AudioFolder

    return sorted({ext.lower() for ext in AudioFolder.EXTENSIONS})


def load_audio_folder(path: str | os.PathLike, sampling_rate: int, **kwargs: Any) -> AudioDataset:
    """A folder of audio files, speakers from the top-level subfolder names (`root/alice/1.wav` and
    `root/alice/day2/5.flac` -> "alice"); files directly in `root` when there are no subfolders
    (no speakers then). File types are those of `datasets`' "audiofolder"; hidden files and
    folders (".*", "__*") are ignored, like there. `kwargs` go to `AudioDataset`.

    The dataset is built here rather than with `load_dataset("audiofolder")`, which in `datasets`
    5.x encodes every file through torchcodec, even a plain path, and fails without it.
    """
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder {root} does not exist or is not a directory.")
    extensions = _audio_extensions()
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in extensions
        and not any(part.startswith((".", "__")) for part in p.relative_to(root).parts)
    )
    if not files:
        raise FileNotFoundError(
            f"audio folder {root} holds no audio files (looked for {', '.join(extensions)}). Put the files in "
            "one subfolder per speaker, e.g. root/alice/1.wav."
        )
    top_level = [p for p in files if p.parent == root]
    if top_level and len(top_level) < len(files):
        nested = next(p for p in files if p.parent != root)
        raise ValueError(
            f"audio folder {root} mixes files at its top level ({top_level[0].name}) with files in subfolders "
            f"({nested.relative_to(root)}). Move every file into its speaker's subfolder, or keep them all at "
            "the top level for a dataset without speakers."
        )
    columns: dict[str, list[str]] = {"audio": [str(p) for p in files]}
    features = {"audio": datasets.Audio(decode=False)}
    if not top_level:
        columns["speaker"] = [p.relative_to(root).parts[0] for p in files]
        features["speaker"] = datasets.ClassLabel(names=sorted(set(columns["speaker"])))
    hf_dataset = datasets.Dataset.from_dict(columns)
    # Casting converts the stored strings, where from_dict(features=...) would encode them through torchcodec.
    for column, feature in features.items():
        hf_dataset = hf_dataset.cast_column(column, feature)
    return AudioDataset(hf_dataset, sampling_rate, **kwargs)


def load_hub_audio_dataset(
    name: str, split: str, sampling_rate: int, *, load_kwargs: dict[str, Any] | None = None, **kwargs: Any
) -> AudioDataset:
    """`datasets.load_dataset(name, split=split, **load_kwargs)` wrapped in an `AudioDataset(**kwargs)`.

    Needs the network the first time; afterwards `datasets` serves it from its cache.
    """
    local = "a local folder of audio with load_audio_folder(path, ...) or the offline SyntheticSpeech corpus"
    return AudioDataset(load_hub_split(name, split, load_kwargs, local), sampling_rate, **kwargs)


# -- offline synthetic speech --------------------------------------------------------------------
# (name, espeak-ng voice+variant, pitch 0-99 (espeak's default 50), speed in words per minute
# (default 175)): five male and five female identities over five accents. British English is the
# voice "en": espeak-ng ignores a variant after "en-gb" (and any unknown variant) without a word.
SYNTHETIC_SPEAKERS: tuple[tuple[str, str, int, int], ...] = (
    ("us-male-low", "en-us+m1", 20, 150),
    ("us-male", "en-us+m3", 50, 175),
    ("us-female", "en-us+f2", 55, 165),
    ("us-female-high", "en-us+f4", 85, 180),
    ("gb-male", "en+m2", 40, 160),
    ("gb-female", "en+f1", 60, 150),
    ("scottish-male", "en-gb-scotland+m4", 30, 140),
    ("scottish-female", "en-gb-scotland+f3", 65, 160),
    ("caribbean-male", "en-029+m5", 45, 185),
    ("rp-female", "en-gb-x-rp+f5", 70, 145),
)
TRAIN_SENTENCES = 200
TEST_SENTENCES = 30
# Test sentences start at this index, so any train split of up to this many sentences is disjoint
# from them: the test split is unseen text spoken by the same voices.
TEST_SENTENCE_OFFSET = 10_000
# Bump when synthesis or storage changes, so old caches are not read as new ones.
_CACHE_FORMAT = 1
_PEAK = 0.9  # every utterance is scaled to this peak: loudness is no speaker cue, with headroom
_TRIM_MARGIN_SECONDS = 0.05

_PEOPLE = (
    "farmer", "teacher", "doctor", "sailor", "painter", "child", "baker", "driver", "singer", "captain",
    "student", "neighbor", "dog", "cat", "horse", "rabbit",
)  # fmt: skip
_THINGS = (
    "lamp", "basket", "letter", "bottle", "ladder", "blanket", "bicycle", "kettle", "window", "candle",
    "hammer", "violin", "jacket", "pillow", "clock", "wagon", "mirror", "carpet", "shovel", "umbrella",
    "ribbon", "anchor", "envelope", "orange",
)  # fmt: skip
_ADJECTIVES = (
    "quiet", "small", "bright", "heavy", "old", "young", "clever", "gentle", "noisy", "tiny", "golden",
    "silver", "wooden", "yellow", "purple", "happy", "tired", "brave", "careful", "friendly", "curious",
    "ancient", "narrow", "muddy", "shiny", "soft", "strange", "warm", "broken", "patient",
)  # fmt: skip
_VERBS = (  # (base, past)
    ("carry", "carried"), ("paint", "painted"), ("find", "found"), ("watch", "watched"),
    ("follow", "followed"), ("lift", "lifted"), ("push", "pushed"), ("clean", "cleaned"),
    ("open", "opened"), ("drop", "dropped"), ("borrow", "borrowed"), ("hide", "hid"), ("keep", "kept"),
    ("sell", "sold"), ("buy", "bought"), ("chase", "chased"), ("visit", "visited"), ("fix", "fixed"),
    ("pack", "packed"), ("wash", "washed"), ("count", "counted"), ("build", "built"), ("catch", "caught"),
    ("move", "moved"), ("bring", "brought"), ("leave", "left"), ("wrap", "wrapped"), ("check", "checked"),
    ("hold", "held"), ("share", "shared"),
)  # fmt: skip
_PREPOSITIONS = ("across", "near", "behind", "under", "beside", "through", "into", "past", "along", "around")
_PLACES = (
    "market", "station", "old bridge", "kitchen", "school", "harbor", "forest", "village", "library",
    "hill", "park", "river", "castle", "farm", "beach",
)  # fmt: skip
_TIMES = (
    "this morning", "last night", "after lunch", "before dinner", "every evening", "yesterday", "at noon",
    "in the spring",
)  # fmt: skip


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _random_sentence(rng: random.Random) -> str:
    """One sentence of 7 to 13 words from a small template grammar."""
    adjective, other_adjective = rng.sample(_ADJECTIVES, 2)
    person, other_person = rng.sample(_PEOPLE, 2)
    thing = rng.choice(_THINGS)
    base, past = rng.choice(_VERBS)
    place = f"{rng.choice(_PREPOSITIONS)} the {rng.choice(_PLACES)}"
    time = rng.choice(_TIMES)
    template = rng.randrange(6)
    if template == 0:
        return f"The {adjective} {person} {past} the {thing} {place}."
    if template == 1:
        return f"{_article(person).capitalize()} {person} {past} {_article(adjective)} {adjective} {thing} {time}."
    if template == 2:
        return f"The {person} and the {other_person} {past} the {adjective} {thing} {place}."
    if template == 3:
        return f"Why did the {adjective} {person} {base} the {thing} {time}?"
    if template == 4:
        return f"{time[0].upper()}{time[1:]}, the {person} {past} {_article(adjective)} {adjective} {thing}."
    return f"The {thing} {place} was {adjective} and {other_adjective}."


def synthetic_sentences(count: int, offset: int = 0) -> list[str]:
    """Sentences `offset` to `offset + count` of a fixed sequence of distinct English sentences.

    The sequence is drawn from `random.Random(0)` and never changes: sentence i is the same for any
    `count` and `offset`, and no sentence appears twice.
    """
    if count < 0 or offset < 0:
        raise ValueError(f"count and offset must be non-negative, got {count} and {offset}.")
    rng = random.Random(0)
    seen: set[str] = set()
    sentences: list[str] = []
    while len(sentences) < offset + count:
        sentence = _random_sentence(rng)
        if sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
    return sentences[offset:]


def _default_cache_root() -> Path:
    return Path(os.environ.get("VQGEN_CACHE", "~/.cache/vqgen")).expanduser()


def _speak(espeak: str, text: str, speaker: tuple[str, str, int, int]) -> tuple[np.ndarray, int]:
    """`text` in `speaker`'s voice: espeak-ng's float32 samples and rate, silence trimmed."""
    _, voice, pitch, speed = speaker
    # A list of arguments, no shell: the text is never interpreted.
    command = [espeak, "-v", voice, "-p", str(pitch), "-s", str(speed), "--stdout", text]
    result = subprocess.run(command, capture_output=True, timeout=60)
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(
            f"espeak-ng failed (exit status {result.returncode}) for voice {voice!r} on {text!r}: "
            f"{result.stderr.decode(errors='replace').strip() or 'no output'}. Check that `espeak-ng -v {voice} "
            "hello` works."
        )
    samples, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    # espeak pads with digital silence; keep a short margin so that onsets and decays stay whole.
    magnitude = np.abs(samples)
    active = np.flatnonzero(magnitude > 0.01 * magnitude.max())
    if active.size == 0:
        raise RuntimeError(f"espeak-ng produced only silence for voice {voice!r} on {text!r}.")
    margin = round(_TRIM_MARGIN_SECONDS * rate)
    return samples[max(active[0] - margin, 0) : active[-1] + 1 + margin], rate


def _resample_clips(clips: Sequence[np.ndarray], rate: int, sampling_rate: int) -> list[np.ndarray]:
    """Clips at `rate` -> float32 clips at `sampling_rate`, each scaled to the peak `_PEAK`."""
    # One resampling call for all clips, zero-padded to the longest (the padding only adds zeros
    # past each clip's end, which resampling assumes anyway): a call per clip is up to 50x slower
    # here, as torch's intra-op threads fall asleep during each espeak run and wake up slowly.
    batch = torch.zeros(len(clips), max(len(clip) for clip in clips))
    for row, clip in zip(batch, clips):
        row[: len(clip)] = torch.from_numpy(clip)
    if rate != sampling_rate:
        batch = AF.resample(batch, rate, sampling_rate)
    waveforms = []
    for row, clip in zip(batch, clips):
        waveform = row[: -(-len(clip) * sampling_rate // rate)]  # ceil, as resample computes lengths
        waveforms.append((waveform * (_PEAK / waveform.abs().max())).numpy())
    return waveforms


class SyntheticSpeech(torch.utils.data.Dataset):
    """Offline speech: template sentences (`synthetic_sentences`) spoken by espeak-ng voices.

    A parallel corpus: every speaker of `speakers` (names from `SYNTHETIC_SPEAKERS`, default all
    ten, ids in the given order) speaks every sentence of the split, so each sentence exists in
    every voice, a reference that voice-conversion evaluation can compare against. The split is by
    text: "train" holds sentences [0, n), n = `TRAIN_SENTENCES` (200) by default; "test" holds
    sentences [`TEST_SENTENCE_OFFSET`, `TEST_SENTENCE_OFFSET` + n), n = `TEST_SENTENCES` (30) by
    default, so test text is never trained on. `num_sentences` sets n.

    Items are sentence-major: item i is sentence i // len(speakers) in speaker i % len(speakers)'s
    voice; `texts[i]` is its text, `sentences` the split's distinct sentences. Each utterance is
    trimmed of leading and trailing silence (50 ms margins kept), resampled from espeak's 22.05 kHz
    to `sampling_rate` and scaled to a peak of 0.9.

    The utterances are synthesized once (needs espeak-ng: `sudo apt-get install espeak-ng`, which
    scripts/setup.sh runs) into `cache_dir` (default `$VQGEN_CACHE`, else `~/.cache/vqgen`), under
    `speech/<hash of the settings>/<speaker>/<sentence index>.wav` (16-bit PCM) with a
    `metadata.json`; later constructions with the same settings read them from there. The folder
    is written under a temporary name and renamed when complete, so an interrupted run leaves
    nothing that passes for a finished cache. Waveforms are read from the cache at each access:
    the default train split, 1.7 hours, would take 380 MB as float32 at 16 kHz, while the files
    stay in the OS page cache.
    """

    def __init__(
        self,
        split: str = "train",
        sampling_rate: int = 16000,
        num_sentences: int | None = None,
        speakers: Sequence[str] | None = None,
        cache_dir: str | os.PathLike | None = None,
    ):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
        self.split = split
        self.sampling_rate = _check_sampling_rate(sampling_rate)
        self._voices = self._pick_speakers(speakers)
        self.speakers = [name for name, *_ in self._voices]

        count = num_sentences if num_sentences is not None else TRAIN_SENTENCES if split == "train" else TEST_SENTENCES
        if count < 1:
            raise ValueError(f"num_sentences must be at least 1, got {count}.")
        if split == "train" and count > TEST_SENTENCE_OFFSET:
            raise ValueError(
                f"num_sentences={count} would reach the test sentences, which start at {TEST_SENTENCE_OFFSET}; "
                f"use at most {TEST_SENTENCE_OFFSET} train sentences."
            )
        offset = 0 if split == "train" else TEST_SENTENCE_OFFSET
        self.sentence_indices = list(range(offset, offset + count))
        self.sentences = synthetic_sentences(count, offset)

        self._metadata = {
            "format": _CACHE_FORMAT,
            "split": split,
            "sampling_rate": self.sampling_rate,
            "speakers": [list(voice) for voice in self._voices],
            "sentence_indices": self.sentence_indices,
            "texts": self.sentences,
        }
        key = hashlib.sha256(json.dumps(self._metadata, sort_keys=True).encode()).hexdigest()[:16]
        root = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_root()
        self.directory = root / "speech" / key
        if not self.directory.exists():
            self._generate()
        self._check_cache()

        self._utterances = [(speaker, sentence) for sentence in range(count) for speaker in range(len(self.speakers))]
        self.texts = [self.sentences[sentence] for _, sentence in self._utterances]

    @staticmethod
    def _pick_speakers(speakers: Sequence[str] | None) -> list[tuple[str, str, int, int]]:
        if speakers is None:
            return list(SYNTHETIC_SPEAKERS)
        if isinstance(speakers, str):
            speakers = [speakers]
        known = {voice[0]: voice for voice in SYNTHETIC_SPEAKERS}
        unknown = [name for name in speakers if name not in known]
        if unknown:
            raise ValueError(f"unknown synthetic speakers {unknown}; the known ones are {list(known)}.")
        if not speakers or len(set(speakers)) != len(speakers):
            raise ValueError(f"speakers must be a non-empty list of distinct names, got {list(speakers)}.")
        return [known[name] for name in speakers]

    def _path(self, speaker: int, sentence: int) -> Path:
        return self.directory / self.speakers[speaker] / f"{self.sentence_indices[sentence]}.wav"

    def _generate(self) -> None:
        espeak = shutil.which("espeak-ng")
        if espeak is None:
            raise FileNotFoundError(
                "SyntheticSpeech needs the espeak-ng speech synthesizer to generate its corpus, and it is not on "
                "PATH. Install it with `sudo apt-get install espeak-ng` (scripts/setup.sh does)."
            )
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{self.directory.name}.partial-", dir=self.directory.parent))
        try:
            for name in self.speakers:
                (partial / name).mkdir()
            total = len(self.sentences) * len(self._voices)
            with (
                ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool,
                tqdm(total=total, desc=f"Synthesizing {self.split} speech", unit="utt") as progress,
            ):
                for index, text in zip(self.sentence_indices, self.sentences):
                    # espeak-ng is single-threaded: speak the sentence in all voices side by side.
                    spoken = list(pool.map(functools.partial(_speak, espeak, text), self._voices))
                    rate = spoken[0][1]  # espeak-ng always writes 22.05 kHz
                    waveforms = _resample_clips([clip for clip, _ in spoken], rate, self.sampling_rate)
                    for name, waveform in zip(self.speakers, waveforms):
                        soundfile.write(partial / name / f"{index}.wav", waveform, self.sampling_rate, subtype="PCM_16")
                    progress.update(len(waveforms))
            (partial / "metadata.json").write_text(json.dumps(self._metadata, indent=1))
            try:
                os.replace(partial, self.directory)
            except OSError:
                # Another process (a second rank, say) finished the same cache first: use theirs.
                if not (self.directory / "metadata.json").is_file():
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)  # gone already after a successful rename

    def _check_cache(self) -> None:
        metadata_file = self.directory / "metadata.json"
        try:
            metadata = json.loads(metadata_file.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"{self.directory} is not a complete synthetic speech cache ({metadata_file.name}: {exc}). "
                "Delete that folder to generate it again."
            ) from exc
        if metadata != self._metadata:
            raise ValueError(
                f"{metadata_file} describes other settings than these. Delete {self.directory} to generate it again."
            )
        for sentence in range(len(self.sentences)):
            for speaker in range(len(self.speakers)):
                if not self._path(speaker, sentence).is_file():
                    raise ValueError(
                        f"synthetic speech cache file {self._path(speaker, sentence)} is missing. Delete "
                        f"{self.directory} to generate it again."
                    )

    def __len__(self) -> int:
        return len(self._utterances)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        speaker, sentence = self._utterances[index]
        waveform = read_audio(self._path(speaker, sentence), self.sampling_rate)
        return {"input_values": waveform, "speaker": torch.tensor(speaker, dtype=torch.long)}


# -- fixed-length segments -------------------------------------------------------------------------
class AudioCrops(torch.utils.data.Dataset):
    """Fixed-length segments `{"input_values": (1, segment_length), "speaker"}` of any audio source.

    Item i is a segment of the source's item i. With `random=True` (training) its start is drawn
    with `torch.randint` from the global torch RNG, so seeding torch (or restoring Accelerate's
    saved RNG state on resume) replays the same crops; one draw per item, whatever its length.
    With `random=False` (evaluation) the segment is the utterance's center, the same every time.
    Utterances shorter than `segment_length` are zero-padded at the end.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, segment_length: int, *, random: bool = True):
        if isinstance(segment_length, bool) or not isinstance(segment_length, numbers.Integral) or segment_length < 1:
            raise ValueError(f"segment_length must be a positive number of samples, got {segment_length!r}.")
        self.dataset = dataset
        self.segment_length = int(segment_length)
        self.random = random
        self.sampling_rate: int = dataset.sampling_rate
        self.speakers: list[str] | None = dataset.speakers

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.dataset[index]
        waveform = item["input_values"]
        excess = max(waveform.shape[-1] - self.segment_length, 0)
        start = int(torch.randint(excess + 1, ())) if self.random else excess // 2
        segment = waveform[:, start : start + self.segment_length]
        if segment.shape[-1] < self.segment_length:
            segment = torch.nn.functional.pad(segment, (0, self.segment_length - segment.shape[-1]))
        return {"input_values": segment, "speaker": item["speaker"]}
