"""Audio sources for stage one: Hugging Face audio datasets, local audio folders, and
fixed-length crops for training (the offline speech corpus is `speech_corpus.py`).

Every source yields `{"input_values": FloatTensor (1, T) float32 in [-1, 1], "speaker": LongTensor
scalar}`: a mono waveform at the source's `sampling_rate` and a speaker id (-1 when the source has
none). Every source also has `sampling_rate` (int), `speakers` (speaker names, id = position; None
when the ids have no names) and a length.

- `read_audio` reads one file (path, bytes, or a `datasets` `{"bytes", "path"}` dict) with
  soundfile and resamples it with torchaudio. It never mixes channels silently (pass
  `mix_to_mono=True` to average them) and refuses empty and all-silent files.
- `AudioDataset` wraps a `datasets.Dataset` with an audio column and decodes each file when it is
  read (itself: `datasets` 5.x decodes audio through torchcodec); unusable files are handled by
  `on_bad_audio` ("raise" or "skip", see `media.py`).
- `load_audio_folder` reads a folder of speaker subfolders offline (`root/alice/1.wav` -> "alice").
- `load_hub_audio_dataset` reads a dataset from the Hugging Face Hub (needs the network once).
- `AudioCrops` cuts any source into fixed-length segments: random ones for training, centered
  ones for evaluation.
"""

from __future__ import annotations

import io
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import datasets
import numpy as np
import soundfile
import torch
import torchaudio.functional as AF

from ..common.epoch_random import EpochRandomness
from .media import BadFileError, MediaDataset, SettingMismatch, folder_dataset
from .hf_datasets import (
    find_label_column,
    find_media_column,
    label_vocabulary,
    load_hub_split,
)

AudioSource = Union[str, os.PathLike, bytes, bytearray, Mapping[str, Any]]

# Below this peak a file holds no usable sound (16-bit PCM's smallest step is 3e-5).
SILENCE_PEAK = 1e-4
_SPEAKER_COLUMNS = ("speaker_id", "speaker", "label")


# -- reading one file ---------------------------------------------------------------------------
def check_sampling_rate(sampling_rate: int) -> int:
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
            raise BadFileError(f"{label} holds no audio (neither bytes nor path). Remove the row or fill it in.")
    file = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    try:
        samples, rate = soundfile.read(file, dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError, OSError) as exc:  # LibsndfileError is a RuntimeError
        raise BadFileError(
            f"{label} could not be read as audio (soundfile: {exc}). Replace or remove it, or convert it to "
            "WAV or FLAC (e.g. `ffmpeg -i in.m4a out.wav`)."
        ) from exc
    if samples.shape[0] == 0:
        raise BadFileError(f"{label} holds no samples (0 frames). Remove it or replace it with a non-empty recording.")
    return samples, rate


def _to_mono(samples: np.ndarray, label: str, mix_to_mono: bool) -> np.ndarray:
    channels = samples.shape[1]
    if channels == 1:
        return samples[:, 0]
    if not mix_to_mono:
        raise SettingMismatch(
            f"{label} has {channels} channels but mono audio is expected. Pass mix_to_mono=True to average "
            "the channels into one, or convert the file to mono."
        )
    return samples.mean(axis=1)


def _check_audible(mono: np.ndarray, label: str) -> None:
    peak = float(np.abs(mono).max())
    if peak < SILENCE_PEAK:
        raise BadFileError(
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
    sampling_rate = check_sampling_rate(sampling_rate)
    mono, rate = _load_mono(source, name or _describe_source(source), mix_to_mono)
    return _resample(torch.from_numpy(np.ascontiguousarray(mono))[None], rate, sampling_rate)


# -- Hugging Face audio datasets ------------------------------------------------------------------
class AudioDataset(MediaDataset):
    """A `datasets.Dataset` with an audio column, as mono waveforms in [-1, 1] at `sampling_rate`.

    The audio column is the first `datasets.Audio` feature unless `audio_column` names one. The
    speaker column is `speaker_column`, else the first ClassLabel column, else one named
    "speaker_id", "speaker" or "label" (none: every speaker id is -1). `speakers` holds the
    ClassLabel names, or the sorted distinct values of a string column (ids follow that order);
    an integer column's values are the ids as they are, with `speakers` None.

    Files are decoded with soundfile (`read_audio`) when an item is read, never in the
    constructor; multi-channel files raise ValueError unless `mix_to_mono=True`; unreadable, empty
    and silent files are handled by `on_bad_audio` ("raise" or "skip", see `media.py`).
    """

    kind = "audio file"

    def __init__(
        self,
        hf_dataset: datasets.Dataset,
        sampling_rate: int,
        audio_column: str | None = None,
        speaker_column: str | None = None,
        on_bad_audio: str = "raise",
        mix_to_mono: bool = False,
    ):
        self.sampling_rate = check_sampling_rate(sampling_rate)
        self.mix_to_mono = mix_to_mono
        self.audio_column = find_media_column(hf_dataset, audio_column, datasets.Audio, "audio_column")
        self.speaker_column = find_label_column(hf_dataset, speaker_column, _SPEAKER_COLUMNS, "speaker_column")
        self.speakers, self._speaker_ids = label_vocabulary(hf_dataset, self.speaker_column, "speaker_column")
        # Keep {"bytes", "path"}: decoding with decode=True would need torchcodec.
        columns = [self.audio_column] + ([self.speaker_column] if self.speaker_column else [])
        super().__init__(hf_dataset, self.audio_column, datasets.Audio, columns, on_bad_audio)

    def _load(self, row_index: int, row: dict) -> dict[str, torch.Tensor]:
        value = row[self.audio_column]
        waveform = read_audio(value or {}, self.sampling_rate, mix_to_mono=self.mix_to_mono, name=self.describe(row_index, value))
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
    hf_dataset = folder_dataset(root, _audio_extensions(), datasets.Audio, "audio", "speaker", "audio")
    return AudioDataset(hf_dataset, sampling_rate, **kwargs)


def load_hub_audio_dataset(
    name: str, split: str, sampling_rate: int, *, load_kwargs: dict[str, Any] | None = None, **kwargs: Any
) -> AudioDataset:
    """`datasets.load_dataset(name, split=split, **load_kwargs)` wrapped in an `AudioDataset(**kwargs)`.

    Needs the network the first time; afterwards `datasets` serves it from its cache.
    """
    local = "a local folder of audio with load_audio_folder(path, ...) or the offline SyntheticSpeech corpus"
    return AudioDataset(load_hub_split(name, split, load_kwargs, local), sampling_rate, **kwargs)


# -- fixed-length segments -------------------------------------------------------------------------
class AudioCrops(torch.utils.data.Dataset):
    """Fixed-length segments `{"input_values": (1, segment_length), "speaker"}` of any audio source.

    Item i is a segment of the source's item i. With `random=True` (training) its start is drawn
    from (seed, epoch, i) (`EpochRandomness`; the training loop calls `set_epoch`), so a resumed
    run or another worker process cuts the same crops. With `random=False` (evaluation) the
    segment is the utterance's center, the same every time. Utterances shorter than
    `segment_length` are zero-padded at the end.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, segment_length: int, *, random: bool = True, seed: int = 0):
        if isinstance(segment_length, bool) or not isinstance(segment_length, numbers.Integral) or segment_length < 1:
            raise ValueError(f"segment_length must be a positive number of samples, got {segment_length!r}.")
        self.dataset = dataset
        self.segment_length = int(segment_length)
        self.random = random
        self.randomness = EpochRandomness(seed)
        self.sampling_rate: int = dataset.sampling_rate
        self.speakers: list[str] | None = dataset.speakers

    def set_epoch(self, epoch: int) -> None:
        self.randomness.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.dataset[index]
        waveform = item["input_values"]
        excess = max(waveform.shape[-1] - self.segment_length, 0)
        start = self.randomness.randint(excess + 1, index) if self.random else excess // 2
        segment = waveform[:, start : start + self.segment_length]
        if segment.shape[-1] < self.segment_length:
            segment = torch.nn.functional.pad(segment, (0, self.segment_length - segment.shape[-1]))
        return {**item, "input_values": segment}
