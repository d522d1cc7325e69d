"""The offline espeak-ng speech corpus: its sentences, its voices, its items and its cache."""

import shutil
import subprocess

import numpy as np
import pytest
import torch

from stage1_tokenizer.data import SYNTHETIC_SPEAKERS, SyntheticSpeech, synthetic_sentences

LOW_MALE, HIGH_FEMALE = "us-male-low", "us-female-high"
TEST_SPEAKERS = [LOW_MALE, HIGH_FEMALE, "gb-male", "scottish-female"]


def median_f0(waveform, rate):
    """Median fundamental frequency (Hz) over the loud frames, by autocorrelation in 60-500 Hz."""
    x = np.asarray(waveform, dtype=np.float64).reshape(-1)
    frame, estimates = int(0.04 * rate), []
    for start in range(0, x.size - frame, frame // 2):
        chunk = x[start : start + frame] - x[start : start + frame].mean()
        if np.sqrt(np.mean(chunk**2)) < 0.05 * np.abs(x).max():
            continue
        correlation = np.correlate(chunk, chunk, "full")[frame - 1 :]
        low, high = rate // 500, rate // 60
        lag = low + int(np.argmax(correlation[low:high]))
        if correlation[lag] > 0.3 * correlation[0]:
            estimates.append(rate / lag)
    return float(np.median(estimates))


@pytest.fixture(scope="module")
def speech_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("speech_cache")


@pytest.fixture(scope="module")
def speech(speech_cache):
    return SyntheticSpeech("train", 16000, num_sentences=3, speakers=TEST_SPEAKERS, cache_dir=speech_cache)


def test_sentences_are_distinct_stable_and_plain():
    sentences = synthetic_sentences(300)
    assert len(set(sentences)) == 300
    assert synthetic_sentences(5) == sentences[:5] and synthetic_sentences(4, offset=10) == sentences[10:14]
    assert all(6 <= len(s.split()) <= 13 and s[0].isupper() and s[-1] in ".?" for s in sentences)


def test_speakers_are_distinct_voices():
    names = [name for name, *_ in SYNTHETIC_SPEAKERS]
    assert len(names) >= 10 and len(set(names)) == len(names)
    assert all(0 <= pitch <= 99 and 80 <= speed <= 450 for _, _, pitch, speed in SYNTHETIC_SPEAKERS)

    def say(voice, pitch, speed):
        command = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "--stdout", "Hello there."]
        return subprocess.run(command, capture_output=True, check=True).stdout

    outputs = set()
    for _, voice, pitch, speed in SYNTHETIC_SPEAKERS:
        output = say(voice, pitch, speed)
        # espeak-ng drops an unknown variant (or one after "en-gb") silently: it must change the sound.
        assert output != say(voice.split("+")[0], pitch, speed), voice
        outputs.add(output)
    assert len(outputs) == len(SYNTHETIC_SPEAKERS)


def test_synthetic_speech_items(speech):
    assert len(speech) == 12 and speech.speakers == TEST_SPEAKERS and speech.sampling_rate == 16000
    assert speech.sentences == synthetic_sentences(3) and speech.texts[:5] == [speech.sentences[0]] * 4 + [
        speech.sentences[1]
    ]
    for i in range(len(speech)):
        item = speech[i]
        waveform = item["input_values"]
        assert int(item["speaker"]) == i % 4 and item["speaker"].dtype == torch.long
        assert waveform.ndim == 2 and waveform.shape[0] == 1 and waveform.dtype == torch.float32
        assert 1.0 < waveform.shape[1] / 16000 < 8.0  # a spoken sentence, silence trimmed
        assert waveform.abs().max() == pytest.approx(0.9, abs=1e-3)  # peak-normalised, within [-1, 1]
        assert waveform.pow(2).mean().sqrt() > 0.05  # speech throughout, not mostly silence
        assert waveform[0, :400].abs().max() < 0.5  # a quiet 50 ms margin before the onset


def test_synthetic_speech_sampling_rate_keeps_durations(speech, speech_cache):
    native = SyntheticSpeech("train", 22050, num_sentences=3, speakers=TEST_SPEAKERS, cache_dir=speech_cache)
    for i in range(len(speech)):
        seconds_16k = speech[i]["input_values"].shape[1] / 16000
        seconds_native = native[i]["input_values"].shape[1] / 22050
        assert abs(seconds_16k - seconds_native) < 0.002


def test_synthetic_speakers_differ_measurably(speech):
    low = [median_f0(speech[i]["input_values"], 16000) for i in range(0, 12, 4)]  # us-male-low
    high = [median_f0(speech[i]["input_values"], 16000) for i in range(1, 12, 4)]  # us-female-high
    assert max(low) < 110 and min(high) > 180, (low, high)


def test_test_split_is_unseen_text_by_the_same_speakers(speech, speech_cache):
    test = SyntheticSpeech("test", 16000, num_sentences=2, speakers=TEST_SPEAKERS, cache_dir=speech_cache)
    assert len(test) == 8 and test.speakers == speech.speakers
    assert set(test.texts).isdisjoint(synthetic_sentences(200)) and set(test.texts).isdisjoint(speech.texts)


def test_second_construction_reads_the_cache(speech, speech_cache, monkeypatch):
    def no_espeak(*args, **kwargs):
        raise AssertionError("espeak-ng was called although the corpus is cached")

    monkeypatch.setattr(subprocess, "run", no_espeak)
    again = SyntheticSpeech("train", 16000, num_sentences=3, speakers=TEST_SPEAKERS, cache_dir=speech_cache)
    assert again.directory == speech.directory
    assert all(torch.equal(again[i]["input_values"], speech[i]["input_values"]) for i in range(len(again)))
    assert [p.name for p in (speech_cache / "speech").iterdir() if p.name.startswith(".")] == []


def test_interrupted_generation_leaves_no_cache(tmp_path, monkeypatch):
    real_run, calls = subprocess.run, []

    def fail_on_third_call(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_run(*args, **kwargs)

    monkeypatch.setattr(subprocess, "run", fail_on_third_call)
    with pytest.raises(KeyboardInterrupt):
        SyntheticSpeech(num_sentences=2, speakers=[LOW_MALE, HIGH_FEMALE], cache_dir=tmp_path)
    assert list((tmp_path / "speech").iterdir()) == []  # neither a finished-looking folder nor leftovers


def test_synthetic_speech_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"unknown synthetic speakers \['alice'\]; the known ones are .*us-male-low"):
        SyntheticSpeech(speakers=["alice"], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        SyntheticSpeech("validation", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="would reach the test sentences"):
        SyntheticSpeech(num_sentences=20_000, cache_dir=tmp_path)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"sudo apt-get install espeak-ng"):
        SyntheticSpeech(num_sentences=1, speakers=[LOW_MALE], cache_dir=tmp_path)
