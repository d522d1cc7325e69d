"""Bad input to the pipelines, as a new user would give it: every case is refused at once with the
right error type and a message that names the value; nothing in the working folder is written or
deleted; local path typos never wait on the network."""

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import transformers

import pipelines
from stage1_tokenizer import VQVAEConfig, VQVAEModel
from stage1_tokenizer.code_dataset import tokenizer_fingerprint
from stage2_prior import TransformerConfig, TransformerPrior, VQGenerator, WaveNetConfig, WaveNetPrior

SPEAKERS = ["alice", "bob"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Untrained image and speech bundles (the checks come before any sampling)."""
    root = tmp_path_factory.mktemp("bundles")
    torch.manual_seed(0)
    tokenizer = VQVAEModel(VQVAEConfig(hidden_channels=8, code_dim=4, codebook_size=16, quantizer="vq")).eval()
    prior = TransformerPrior(TransformerConfig(codebook_size=16, code_shape=[7, 7], num_classes=2, hidden_size=8, num_layers=1,
                                               num_heads=2, id2label={0: "cat", 1: "dog"},
                                               tokenizer_fingerprint=tokenizer_fingerprint(tokenizer)))  # fmt: skip
    VQGenerator.from_parts(tokenizer, [prior]).save_pretrained(root / "image")
    speech = VQVAEModel(VQVAEConfig(modality="audio", sampling_rate=8000, hidden_channels=8, code_dim=4, codebook_size=16,
                                    quantizer="vq", speakers=SPEAKERS)).eval()  # fmt: skip
    voice = WaveNetPrior(WaveNetConfig(codebook_size=16, code_shape=[32], num_classes=2, residual_channels=8, skip_channels=8,
                                       num_layers=2, id2label=dict(enumerate(SPEAKERS)),
                                       tokenizer_fingerprint=tokenizer_fingerprint(speech)))  # fmt: skip
    VQGenerator.from_parts(speech, [voice]).save_pretrained(root / "speech")
    soundfile.write(root / "stereo.wav", np.full((800, 2), 0.1, dtype=np.float32), 8000)
    return root


def image(**options):
    return lambda b, root: transformers.pipeline("vq-image-gen", model=str(b / "image"))("cat", **options)


def speech(**options):
    return lambda b, root: transformers.pipeline("vq-speech-gen", model=str(b / "speech"))(**{"speaker": "alice", **options})


TONE = (0.3 * np.sin(np.arange(800) / 5)).astype(np.float32)
CASES = [
    ("image: a seed that is no number", image(seed="abc"), ValueError, r"seed must be an int, got 'abc'"),
    ("image: a fractional batch size", image(batch_size=2.5), ValueError, r"batch_size must be an int >= 1, got 2\.5"),
    ("image: no images", image(num_images=0), ValueError, r"num_images must be an int >= 1, got 0"),
    ("image: temperature 0", image(temperature=0), ValueError, r"temperature must be a finite number > 0, got 0"),
    ("image: NaN temperature", image(temperature=float("nan")), ValueError, r"got nan"),
    ("image: a generator that is none", image(generator=42), ValueError, r"generator must be a torch\.Generator, got int"),
    ("image: an unknown output type", image(output_type="jpg"), ValueError, r"output_type must be 'pil' or 'pt', got 'jpg'"),
    ("image: an empty list of classes", lambda b, root: transformers.pipeline("vq-image-gen", model=str(b / "image"))([]),
     ValueError, r"got \[\]"),
    ("image: an unknown class", lambda b, root: transformers.pipeline("vq-image-gen", model=str(b / "image"))("cta"),
     ValueError, r"unknown class name 'cta'.*'cat'"),
    ("image: a top_k beyond the codebook", image(top_k=17), ValueError, r"top_k must lie in 1\.\.16.*got 17"),
    ("speech: infinite seconds", speech(seconds=float("inf")), ValueError, r"seconds must be a finite number > 0, got inf"),
    ("speech: a day of speech", speech(seconds=86400), ValueError, r"seconds must be at most 600.*got 86400"),
    ("speech: negative seconds", speech(seconds=-1), ValueError, r"got -1"),
    ("speech: a seed that is no number", speech(seconds=0.1, seed="abc"), ValueError, r"seed must be an int, got 'abc'"),
    ("speech: audio and seconds", speech(seconds=1, audio=TONE, sampling_rate=8000), ValueError, r"either audio= .* or seconds="),
    ("speech: float audio beyond full scale", speech(audio=TONE * 10, sampling_rate=8000), ValueError, r"peak of 3"),
    ("speech: audio of strings", speech(audio=np.array(["a", "b"]), sampling_rate=8000), ValueError, r"<U1"),
    ("speech: a stereo file", lambda b, root: transformers.pipeline("vq-speech-gen", model=str(b / "speech"))(speaker="alice",
     audio=str(b / "stereo.wav")), ValueError, r"stereo\.wav is not mono.*audio=array\.mean\(axis=1\)"),
    ("speech: a sampling rate of NaN", speech(audio=TONE, sampling_rate=float("nan")), ValueError, r"sampling_rate .* got nan"),
    ("model: a bundle path with a typo", lambda b, root: pipelines.pipeline(model="me/typo-bundle"), FileNotFoundError,
     r"model='me/typo-bundle' is no file or folder here.*cannot be reached"),
    ("model: a relative path that does not exist", lambda b, root: pipelines.pipeline(model="./bundels/demo"), FileNotFoundError,
     r"'\./bundels/demo' is neither a bundle folder.*holds"),
    ("upload: a bundle folder that does not exist", lambda b, root: pipelines.push_to_hub("nope-bundle", "me/x"), FileNotFoundError,
     r"nope-bundle is not a bundle folder"),
    ("save: into a user's folder", lambda b, root: transformers.pipeline("vq-image-gen", model=str(b / "image")).save_pretrained(
     root / "user"), FileExistsError, r"user already holds files"),
]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name, call, error, message", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_refused_at_once_with_the_value(bundles, tmp_path, monkeypatch, name, call, error, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("my own work")
    before, start = snapshot(tmp_path), time.perf_counter()
    with pytest.raises(error, match=message):
        call(bundles, tmp_path)
    assert snapshot(tmp_path) == before
    assert time.perf_counter() - start < 15  # no network retries (a pipeline's load is most of it)
