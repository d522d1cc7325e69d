"""The offline speech corpus: template sentences spoken by ten espeak-ng voices, synthesized once
into the cache (`SyntheticSpeech`), a parallel corpus for training and judging the speech tokenizer
and voice conversion without any download.
"""

from __future__ import annotations

import functools
import io
import json
import os
import random
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional as AF
from tqdm.auto import tqdm

from .audio import check_sampling_rate, read_audio
from .cache import cache_entry, cache_root, settings_key

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
TRIM_MARGIN_SECONDS = 0.05

PEOPLE = (
    "farmer", "teacher", "doctor", "sailor", "painter", "child", "baker", "driver", "singer", "captain",
    "student", "neighbor", "dog", "cat", "horse", "rabbit",
)  # fmt: skip
THINGS = (
    "lamp", "basket", "letter", "bottle", "ladder", "blanket", "bicycle", "kettle", "window", "candle",
    "hammer", "violin", "jacket", "pillow", "clock", "wagon", "mirror", "carpet", "shovel", "umbrella",
    "ribbon", "anchor", "envelope", "orange",
)  # fmt: skip
ADJECTIVES = (
    "quiet", "small", "bright", "heavy", "old", "young", "clever", "gentle", "noisy", "tiny", "golden",
    "silver", "wooden", "yellow", "purple", "happy", "tired", "brave", "careful", "friendly", "curious",
    "ancient", "narrow", "muddy", "shiny", "soft", "strange", "warm", "broken", "patient",
)  # fmt: skip
VERBS = (  # (base, past)
    ("carry", "carried"), ("paint", "painted"), ("find", "found"), ("watch", "watched"),
    ("follow", "followed"), ("lift", "lifted"), ("push", "pushed"), ("clean", "cleaned"),
    ("open", "opened"), ("drop", "dropped"), ("borrow", "borrowed"), ("hide", "hid"), ("keep", "kept"),
    ("sell", "sold"), ("buy", "bought"), ("chase", "chased"), ("visit", "visited"), ("fix", "fixed"),
    ("pack", "packed"), ("wash", "washed"), ("count", "counted"), ("build", "built"), ("catch", "caught"),
    ("move", "moved"), ("bring", "brought"), ("leave", "left"), ("wrap", "wrapped"), ("check", "checked"),
    ("hold", "held"), ("share", "shared"),
)  # fmt: skip
PREPOSITIONS = ("across", "near", "behind", "under", "beside", "through", "into", "past", "along", "around")
PLACES = (
    "market", "station", "old bridge", "kitchen", "school", "harbor", "forest", "village", "library",
    "hill", "park", "river", "castle", "farm", "beach",
)  # fmt: skip
TIMES = (
    "this morning", "last night", "after lunch", "before dinner", "every evening", "yesterday", "at noon",
    "in the spring",
)  # fmt: skip


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _random_sentence(rng: random.Random) -> str:
    """One sentence of 7 to 13 words from a small template grammar."""
    adjective, other_adjective = rng.sample(ADJECTIVES, 2)
    person, other_person = rng.sample(PEOPLE, 2)
    thing = rng.choice(THINGS)
    base, past = rng.choice(VERBS)
    place = f"{rng.choice(PREPOSITIONS)} the {rng.choice(PLACES)}"
    time = rng.choice(TIMES)
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
    margin = round(TRIM_MARGIN_SECONDS * rate)
    return samples[max(active[0] - margin, 0) : active[-1] + 1 + margin], rate


def resample_clips(clips: Sequence[np.ndarray], rate: int, sampling_rate: int) -> list[np.ndarray]:
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

    decodes_files = True  # each item is read from its WAV file

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
        self.sampling_rate = check_sampling_rate(sampling_rate)
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
        root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
        self.directory = root / "speech" / settings_key(self._metadata)
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
        with cache_entry(self.directory) as partial:
            for name in self.speakers:
                (partial / name).mkdir(parents=True)
            total = len(self.sentences) * len(self._voices)
            with (
                ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool,
                tqdm(total=total, desc=f"Synthesizing {self.split} speech", unit="utt") as progress,
            ):
                for index, text in zip(self.sentence_indices, self.sentences):
                    # espeak-ng is single-threaded: speak the sentence in all voices side by side.
                    spoken = list(pool.map(functools.partial(_speak, espeak, text), self._voices))
                    rate = spoken[0][1]  # espeak-ng always writes 22.05 kHz
                    waveforms = resample_clips([clip for clip, _ in spoken], rate, self.sampling_rate)
                    for name, waveform in zip(self.speakers, waveforms):
                        soundfile.write(partial / name / f"{index}.wav", waveform, self.sampling_rate, subtype="PCM_16")
                    progress.update(len(waveforms))
            (partial / "metadata.json").write_text(json.dumps(self._metadata, indent=1))

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


