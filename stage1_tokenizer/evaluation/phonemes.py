"""Phoneme timings from the synthesizer itself, and per-frame phoneme labels for the corpus.

`SyntheticSpeech` is spoken by espeak-ng, which knows where each phoneme starts: libespeak-ng
reports a phoneme event (`espeakEVENT_PHONEME`) with the phoneme's name and its position in the
output samples when the library is initialised with `espeakINITIALIZE_PHONEME_EVENTS`. So the
labels need no forced aligner:

- `synthesize(text, speaker)` speaks `text` in a `SYNTHETIC_SPEAKERS` voice through libespeak-ng
  (ctypes) and returns the 22.05 kHz waveform with its phonemes `(phoneme, start, end)` in samples.
  The waveform is sample for sample the one that the `espeak-ng` command line writes for the same
  voice, pitch, speed and text (the command line is a thin wrapper of the same library call).
- `corpus_utterance(text, speaker, sampling_rate)` applies the corpus's processing (silence trimmed
  with 50 ms margins, resampled, scaled to peak 0.9), so the waveform is the one `SyntheticSpeech`
  stores (up to its 16-bit rounding), and moves the phoneme boundaries along.
- `frame_labels(phonemes, num_frames, hop)` gives each frame of `hop` samples (a code of a
  tokenizer with that stride) the phoneme that covers most of it; `corpus_frame_labels` and
  `dataset_frame_labels` do it all for corpus utterances.

Labels are espeak-ng's phoneme mnemonics (ASCII, e.g. "D", "@", "aI", "oU", "_:" for a pause; see
espeak-ng's docs/phonemes). Stretches without a phoneme (the lead-in before the first phoneme, and
frames past the end) are `SILENCE` ("_", espeak's own name for a short pause). The library can name
phonemes in IPA instead (`espeakINITIALIZE_PHONEME_IPA`), but then pauses and the linking segment
";" (voiced, between "the" and a vowel) all come back as "", so the mnemonics are used.

Why a fresh process for every synthesis: libespeak-ng keeps state between utterances (its pitch
flutter position, automatic gain and other statics of the wave generator, and the C library's
`rand()` for breathiness), none of which its API resets. Only the first utterance after loading
the library equals what the command line produces; the second one in the same process already
differs. So each synthesis runs `_espeak_worker` in a new, bare Python interpreter (about 50 ms,
the price the command line pays too), and is reproducible and identical to it.

Run this module for the corpus statistics and checks:
`python -m stage1_tokenizer.evaluation.phonemes --split test` (see `main`).
"""

from __future__ import annotations

import argparse
import ctypes.util
import inspect
import json
import math
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Union

import numpy as np

from ..data import speech_corpus

ESPEAK_SAMPLING_RATE = 22050  # espeak-ng's only output rate
SILENCE = "_"
Speaker = Union[str, Sequence]  # a SYNTHETIC_SPEAKERS name, or (name, espeak voice, pitch, speed)

# libespeak-ng's constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001


class Phoneme(NamedTuple):
    """One phoneme of an utterance: its name and its samples [start, end)."""

    phoneme: str
    start: int
    end: int


class Synthesis(NamedTuple):
    """A waveform (float32 in [-1, 1]), its rate, and its phonemes, which cover [0, len(waveform))
    in order, without gaps or empty ones."""

    waveform: np.ndarray
    sampling_rate: int
    phonemes: list[Phoneme]


# -- the corpus ------------------------------------------------------------------------------------


def _speaker_voice(speaker: Speaker) -> tuple[str, str, int, int]:
    """(name, espeak voice, pitch, speed) for a `SYNTHETIC_SPEAKERS` name or such a tuple."""
    if isinstance(speaker, str):
        known = {voice[0]: tuple(voice) for voice in speech_corpus.SYNTHETIC_SPEAKERS}
        if speaker not in known:
            raise ValueError(f"unknown synthetic speaker {speaker!r}; the known ones are {list(known)}.")
        return known[speaker]
    name, voice, pitch, speed = speaker
    return str(name), str(voice), int(pitch), int(speed)


# -- libespeak-ng, in a fresh process --------------------------------------------------------------
def _espeak_worker() -> None:
    """Speaks one text with libespeak-ng, as the `espeak-ng` command line does, in a new process.

    argv: library path, voice, pitch, speed, espeak_Initialize options, text. Writes one JSON line
    {"rate": Hz, "phonemes": [[sample, name], ...]} and then the 16-bit samples to stdout. Only the
    standard library is used: this function's source runs in a bare interpreter (`_run_espeak`).
    """
    import ctypes
    import json
    import sys

    library_path, voice, pitch, speed, options, text = sys.argv[1:7]

    class EventId(ctypes.Union):
        _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]

    class Event(ctypes.Structure):  # espeak_EVENT
        _fields_ = [
            ("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
            ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
            ("user_data", ctypes.c_void_p), ("id", EventId),
        ]  # fmt: skip

    event_phoneme, event_list_terminated = 7, 0
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(Event))
    chunks, phonemes = [], []

    def receive(wav, num_samples, events):
        if wav and num_samples > 0:
            chunks.append(ctypes.string_at(wav, 2 * num_samples))
        index = 0
        while events[index].type != event_list_terminated:
            event = events[index]
            if event.type == event_phoneme:
                phonemes.append([event.sample, event.id.string.decode("utf-8", "replace")])
            index += 1
        return 0

    library = ctypes.CDLL(library_path)
    library.espeak_Initialize.restype = ctypes.c_int
    library.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.c_void_p, ctypes.c_void_p,
    ]  # fmt: skip
    rate = library.espeak_Initialize(2, 0, None, int(options))  # AUDIO_OUTPUT_SYNCHRONOUS, default buffer
    if rate <= 0:
        sys.exit("espeak_Initialize failed (is espeak-ng-data installed?)")
    keep_alive = callback_type(receive)
    library.espeak_SetSynthCallback(keep_alive)
    if library.espeak_SetVoiceByName(voice.encode()) != 0:
        sys.exit(f"espeak-ng has no voice {voice!r}")
    # As the command line does: voice first, then rate (espeakRATE = 1) and pitch (espeakPITCH = 3).
    library.espeak_SetParameter(1, int(speed), 0)
    library.espeak_SetParameter(3, int(pitch), 0)
    data = text.encode()
    # espeakCHARS_AUTO | espeakPHONEMES | espeakENDPAUSE, the command line's flags; POS_CHARACTER = 1.
    status = library.espeak_Synth(data, len(data) + 1, 0, 1, 0, 0x100 | 0x1000, None, None)
    if status != 0 or library.espeak_Synchronize() != 0:
        sys.exit(f"espeak_Synth failed with status {status}")
    library.espeak_Terminate()
    sys.stdout.buffer.write(json.dumps({"rate": rate, "phonemes": phonemes}).encode() + b"\n")
    sys.stdout.buffer.write(b"".join(chunks))


def _library_path() -> str:
    return ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"


def _run_espeak(text: str, voice: str, pitch: int, speed: int) -> tuple[np.ndarray, int, list]:
    """(int16 samples, rate, [[sample, phoneme name], ...]) from `_espeak_worker` in a new interpreter."""
    source = inspect.getsource(_espeak_worker) + "\n_espeak_worker()\n"
    # -I -S: no site-packages, no environment, no user paths: a bare interpreter starts in ~30 ms.
    arguments = [_library_path(), voice, str(pitch), str(speed), str(_INITIALIZE_PHONEME_EVENTS), text]
    command = [sys.executable, "-I", "-S", "-c", source, *arguments]
    result = subprocess.run(command, capture_output=True, timeout=60)
    header, newline, audio = result.stdout.partition(b"\n")
    if result.returncode != 0 or not newline:
        raise RuntimeError(
            f"libespeak-ng failed for voice {voice!r} on {text!r}: "
            f"{result.stderr.decode(errors='replace').strip() or f'exit status {result.returncode}'}. It needs the "
            "espeak-ng package (`sudo apt-get install espeak-ng`, which installs libespeak-ng1 and its data)."
        )
    info = json.loads(header)
    return np.frombuffer(audio, dtype="<i2"), int(info["rate"]), info["phonemes"]


def _segments(events: Sequence[Sequence], num_samples: int) -> list[Phoneme]:
    """Phoneme events (sample, name) -> phonemes covering [0, num_samples): each lasts until the next
    one starts, the last until the end; SILENCE before the first; empty ones dropped."""
    starts = [(min(max(int(sample), 0), num_samples), name) for sample, name in events]
    starts.sort(key=lambda item: item[0])  # stable: events at one sample keep their order
    if not starts or starts[0][0] > 0:
        starts.insert(0, (0, SILENCE))
    ends = [start for start, _ in starts[1:]] + [num_samples]
    return [Phoneme(name, start, end) for (start, name), end in zip(starts, ends) if end > start]


def synthesize(text: str, speaker: Speaker) -> Synthesis:
    """`text` spoken by `speaker` (a `SYNTHETIC_SPEAKERS` name or (name, espeak voice, pitch,
    speed)) through libespeak-ng: the untrimmed 22.05 kHz waveform, float32 = int16 / 32768
    (what soundfile reads from the command line's WAV), and its phonemes in samples.

    The waveform equals `espeak-ng -v VOICE -p PITCH -s SPEED --stdout TEXT` sample for sample.
    Phonemes start at espeak's phoneme events (their `sample` field: the sample index in the output
    at which the wave generator reached the phoneme).
    """
    _, voice, pitch, speed = _speaker_voice(speaker)
    samples, rate, events = _run_espeak(text, voice, pitch, speed)
    if samples.size == 0:
        raise RuntimeError(f"libespeak-ng produced no audio for voice {voice!r} on {text!r}.")
    return Synthesis((samples / np.float32(32768)).astype(np.float32), rate, _segments(events, samples.size))


# -- the corpus's processing -----------------------------------------------------------------------
def _trim_bounds(samples: np.ndarray, rate: int) -> tuple[int, int]:
    """[start, stop) that the corpus keeps of espeak's output: from 50 ms before the first sample
    above 1% of the peak to 50 ms after the last one (the corpus's `_speak`)."""
    magnitude = np.abs(samples)
    active = np.flatnonzero(magnitude > 0.01 * magnitude.max())
    if active.size == 0:
        raise RuntimeError("the synthesized utterance is silent.")
    margin = round(speech_corpus.TRIM_MARGIN_SECONDS * rate)
    return max(int(active[0]) - margin, 0), min(int(active[-1]) + 1 + margin, samples.size)


def corpus_utterance(text: str, speaker: Speaker, sampling_rate: int = 16000) -> Synthesis:
    """`text` in `speaker`'s voice as `SyntheticSpeech` stores it, with its phonemes: espeak's output
    trimmed of silence (50 ms margins kept), resampled to `sampling_rate` and scaled to peak 0.9,
    by the corpus's own code; boundaries shifted by the trim and scaled by the rate change
    (rounded to the nearest sample). The stored file holds this waveform rounded to 16 bits.
    """
    synthesis = synthesize(text, speaker)
    start, stop = _trim_bounds(synthesis.waveform, synthesis.sampling_rate)
    clip = synthesis.waveform[start:stop]
    waveform = speech_corpus.resample_clips([clip], synthesis.sampling_rate, sampling_rate)[0]
    scale = sampling_rate / synthesis.sampling_rate

    def move(sample: int) -> int:
        return min(round((min(max(sample - start, 0), clip.size)) * scale), waveform.size)

    moved = [Phoneme(p.phoneme, move(p.start), move(p.end)) for p in synthesis.phonemes]
    moved = [p for p in moved if p.end > p.start]
    moved[-1] = moved[-1]._replace(end=waveform.size)  # rounding must not leave the last samples bare
    return Synthesis(waveform.astype(np.float32), sampling_rate, moved)


# -- frames ---------------------------------------------------------------------------------------
def frame_labels(phonemes: Sequence[Phoneme], num_frames: int, hop: int, offset: int = 0) -> list[str]:
    """One label per frame: frame k covers samples [offset + k * hop, offset + (k + 1) * hop) and
    gets the phoneme that overlaps most of it (the earlier one on a tie); SILENCE where no phoneme
    is (past the end of the utterance, say, where a tokenizer's input is zero-padded)."""
    if hop < 1 or num_frames < 0:
        raise ValueError(f"hop must be positive and num_frames non-negative, got {hop} and {num_frames}.")
    if not phonemes or num_frames == 0:
        return [SILENCE] * num_frames
    starts = np.array([p.start for p in phonemes])
    ends = np.array([p.end for p in phonemes])
    frame_starts = offset + hop * np.arange(num_frames)[:, None]
    overlap = np.clip(np.minimum(ends, frame_starts + hop) - np.maximum(starts, frame_starts), 0, None)
    best = overlap.argmax(axis=1)
    names = [p.phoneme for p in phonemes]
    return [names[index] if overlap[frame, index] > 0 else SILENCE for frame, index in enumerate(best)]


def corpus_frame_labels(
    text: str, speaker: Speaker, hop: int, sampling_rate: int = 16000, num_frames: int | None = None
) -> list[str]:
    """Per-frame phoneme labels of a `SyntheticSpeech` utterance (see `corpus_utterance`), frames of
    `hop` samples at `sampling_rate` from the utterance's first sample; `num_frames` defaults to
    ceil(utterance length / hop) (the last frame partly past the end)."""
    utterance = corpus_utterance(text, speaker, sampling_rate)
    if num_frames is None:
        num_frames = math.ceil(utterance.waveform.size / hop)
    return frame_labels(utterance.phonemes, num_frames, hop)


def dataset_frame_labels(dataset, hop: int, *, num_workers: int | None = None) -> list[list[str]]:
    """`corpus_frame_labels` for every item of a `SyntheticSpeech` dataset, in item order (item i:
    `dataset.texts[i]` in speaker `dataset.speakers[dataset[i]["speaker"]]`), at its sampling rate.
    Synthesizes every utterance again (about 0.1 s each), `num_workers` at a time (default: cores)."""
    speakers = len(dataset.speakers)
    # SyntheticSpeech is sentence-major: item i is sentence i // speakers in speaker i % speakers.
    jobs = [(dataset.texts[index], dataset.speakers[index % speakers]) for index in range(len(dataset))]
    with ThreadPoolExecutor(max_workers=num_workers or os.cpu_count() or 1) as pool:
        return list(pool.map(lambda job: corpus_frame_labels(*job, hop, dataset.sampling_rate), jobs))


# -- checks and statistics ----------------------------------------------------------------------------
def espeak_command_line(text: str, speaker: Speaker) -> np.ndarray:
    """The `espeak-ng` command line's int16 samples for `text` in `speaker`'s voice (the corpus's
    `_speak`, untrimmed), to compare with `synthesize`."""
    import io

    import soundfile

    _, voice, pitch, speed = _speaker_voice(speaker)
    command = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "--stdout", text]
    output = subprocess.run(command, capture_output=True, timeout=60, check=True).stdout
    samples, _ = soundfile.read(io.BytesIO(output), dtype="int16")
    return samples


def is_vowel(phoneme: str) -> bool:
    """Whether an espeak-ng English mnemonic names a vowel or diphthong ("@", "aI", "3:", "V", ...)."""
    return phoneme[:1] in set("aeiouAEIOUV@3")


def is_pause(phoneme: str) -> bool:
    """Whether a mnemonic is a pause ("_", "_:", "_!", ...)."""
    return phoneme.startswith("_")


def segment_rms(waveform: np.ndarray, phonemes: Sequence[Phoneme]) -> list[float]:
    """The RMS level of each phoneme's samples."""
    return [float(np.sqrt(np.mean(np.square(waveform[p.start : p.end], dtype=np.float64)))) for p in phonemes]


def main(argv: Sequence[str] | None = None) -> None:
    """Checks the labels on a `SyntheticSpeech` split and prints its phoneme inventory: command line
    vs library samples, library path vs the stored corpus, energy by phoneme class, and the share
    of each label over all frames (with the majority class)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--num-sentences", type=int, default=None)
    parser.add_argument("--sampling-rate", type=int, default=16000)
    parser.add_argument("--hop", type=int, default=64, help="samples per frame (code)")
    args = parser.parse_args(argv)

    from stage1_tokenizer.data import SyntheticSpeech

    corpus = SyntheticSpeech(args.split, args.sampling_rate, num_sentences=args.num_sentences)
    speakers = len(corpus.speakers)
    jobs = [(corpus.texts[i], corpus.speakers[i % speakers]) for i in range(len(corpus))]

    def check(index: int) -> dict:
        text, speaker = jobs[index]
        raw = synthesize(text, speaker)
        command_line = espeak_command_line(text, speaker)
        utterance = corpus_utterance(text, speaker, args.sampling_rate)
        stored = corpus[index]["input_values"][0].numpy()
        same_length = stored.size == utterance.waveform.size
        levels = segment_rms(raw.waveform, raw.phonemes)
        return {
            "identical": command_line.size == raw.waveform.size
            and bool(np.array_equal(command_line, np.round(raw.waveform * 32768).astype(np.int16))),
            "length_match": same_length,
            "max_difference": float(np.abs(stored - utterance.waveform).max()) if same_length else math.inf,
            "labels": frame_labels(utterance.phonemes, math.ceil(utterance.waveform.size / args.hop), args.hop),
            "levels": [(p.phoneme, level, p.end - p.start) for p, level in zip(raw.phonemes, levels)],
        }

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = list(pool.map(check, range(len(corpus))))

    print(f"SyntheticSpeech({args.split!r}, {args.sampling_rate}): {len(corpus)} utterances, {speakers} speakers")
    identical = sum(result["identical"] for result in results)
    same_length = sum(result["length_match"] for result in results)
    print(f"library waveform == espeak-ng command line, sample for sample: {identical}/{len(results)}")
    print(
        f"corpus_utterance vs stored corpus files: lengths equal {same_length}/{len(results)}, "
        f"max |difference| {max(r['max_difference'] for r in results):.2e} (16-bit rounding: {0.5 / 32768:.1e})"
    )
    classes: dict[str, list[float]] = {"pause": [], "vowel": [], "other": []}
    for result in results:
        for phoneme, level, _ in result["levels"]:
            classes["pause" if is_pause(phoneme) else "vowel" if is_vowel(phoneme) else "other"].append(level)
    for name, levels in classes.items():
        if levels:
            low, high = np.percentile(levels, [10, 90])
            print(
                f"  RMS of {name} segments (22.05 kHz, before scaling): median {np.median(levels):.4f}, "
                f"10th-90th percentile {low:.4f}-{high:.4f}, n={len(levels)}"
            )
    counts = Counter(label for result in results for label in result["labels"])
    total = sum(counts.values())
    print(f"{len(counts)} labels over {total} frames of {args.hop} samples; majority {counts.most_common(1)[0][0]!r} "
          f"{counts.most_common(1)[0][1] / total:.1%}")
    print("  " + ", ".join(f"{label} {count / total:.1%}" for label, count in counts.most_common()))


if __name__ == "__main__":
    main()
