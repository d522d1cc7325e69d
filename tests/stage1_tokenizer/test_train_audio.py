"""Real training of the speech tokenizer on the built-in espeak-ng corpus, through stage one's CLI:
held-out reconstruction improves, and decoding with another speaker converts the voice, as judged
by a speaker classifier trained on the corpus (four voices: chance is 1 in 4)."""

import json

import pytest
import torch

from stage1_tokenizer import VQVAEModel
from stage1_tokenizer import train as train_cli
from stage1_tokenizer.audio_features import log_mel_distance
from stage1_tokenizer.evaluation.speaker_judge import SpeakerClassifier
from stage1_tokenizer.data import AudioCrops, SyntheticSpeech

RATE = 8000
SPEAKERS = ["us-male-low", "us-female-high", "scottish-male", "rp-female"]
SEGMENT = 8192  # about one second at 8 kHz


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    cache = tmp_path_factory.mktemp("speech-cache")
    train = SyntheticSpeech("train", RATE, num_sentences=30, speakers=SPEAKERS, cache_dir=cache)
    return cache, train, SyntheticSpeech("test", RATE, speakers=SPEAKERS, cache_dir=cache)  # the CLI's held-out split


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory, monkeypatch_module):
    cache, _, _ = corpus
    monkeypatch_module.setenv("VQGEN_CACHE", str(cache))
    output = tmp_path_factory.mktemp("speech-run")
    args = [
        "--model.modality", "audio", "--model.sampling_rate", str(RATE), "--dataset", "speech", "--speech_sentences", "30",
        "--speech_speakers", *SPEAKERS, "--model.hidden_channels", "64", "--model.code_dim", "64", "--model.codebook_size", "32",
        "--model.quantizer", "vq-ema", "--model.quantizer_options", '{"dead_code_steps": 50}', "--segment_length", "4096",
        "--eval_segment_length", str(SEGMENT), "--batch_size", "16", "--learning_rate", "0.002", "--max_steps", "600",
        "--eval_every", "600", "--save_every", "600", "--output_dir", str(output),
    ]  # fmt: skip
    model, metrics = train_cli.main(args)
    return output, model.eval(), metrics


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_training_improves_held_out_reconstruction(corpus, trained):
    _, _, test = corpus
    output, model, metrics = trained
    held_out = AudioCrops(test, SEGMENT, random=False)
    waves = torch.stack([held_out[i]["input_values"] for i in range(len(held_out))])
    speakers = torch.stack([held_out[i]["speaker"] for i in range(len(held_out))])
    torch.manual_seed(0)
    untrained = VQVAEModel(model.config).eval()
    with torch.no_grad():
        before = log_mel_distance(untrained.decode(untrained.encode(waves), speakers), waves, RATE).mean().item()
        after = log_mel_distance(model.decode(model.encode(waves), speakers), waves, RATE).mean().item()
    assert after == pytest.approx(metrics["log_mel_distance"], rel=1e-4)  # the CLI's own evaluation agrees
    assert after < 0.5 * before, (before, after)
    saved = json.loads((output / "model" / "eval_results.json").read_text())
    assert saved["log_mel_distance"] == pytest.approx(after, rel=1e-4)
    step = output / "samples" / "step-0000600"
    assert (step / "reconstruction-0.wav").is_file() and (step / "spectrograms.png").is_file()


def test_decoding_with_another_speaker_converts_the_voice(corpus, trained):
    _, train, test = corpus
    _, model, _ = trained
    classifier = SpeakerClassifier(RATE).fit([train[i]["input_values"] for i in range(len(train))], [int(train[i]["speaker"]) for i in range(len(train))])
    items = [test[i] for i in range(len(test))]
    stride = model.config.total_stride
    waves = [item["input_values"][..., : item["input_values"].shape[-1] // stride * stride] for item in items]
    sources = torch.tensor([int(item["speaker"]) for item in items])
    targets = (sources + 1 + torch.arange(len(items)) % (len(SPEAKERS) - 1)) % len(SPEAKERS)  # every other speaker
    assert (targets != sources).all()
    assert (classifier.predict(waves) == sources).float().mean() >= 0.9  # the judge knows the held-out voices
    converted, reconstructed = [], []
    with torch.no_grad():
        for wave, source, target in zip(waves, sources, targets):
            codes = model.encode(wave.unsqueeze(0))
            reconstructed.append(model.decode(codes, source)[0])
            converted.append(model.decode(codes, target)[0])
    reconstructed_accuracy = (classifier.predict(reconstructed) == sources).float().mean().item()
    converted_to_target = (classifier.predict(converted) == targets).float().mean().item()
    chance = 1 / len(SPEAKERS)
    converted_to_source = (classifier.predict(converted) == sources).float().mean().item()
    # measured (2 threads; 1 thread): reconstructions 0.73; 0.99, conversions judged as the target
    # 0.63; 0.66 and as the source 0.15; 0.08. A small codebook (K=32) keeps the speaker out of the
    # codes, as the paper's bottleneck argument asks.
    assert reconstructed_accuracy >= 0.6, reconstructed_accuracy
    assert converted_to_target >= 2 * chance, converted_to_target
    assert converted_to_source <= chance, converted_to_source


def test_wavenet_decoder_learns_speech(corpus, tmp_path, monkeypatch):
    """The paper's decoder on real speech: the teacher-forced NLL of held-out samples falls well
    below the untrained model's (log 256 = 5.5 nats for a uniform guess)."""
    cache, _, test = corpus
    monkeypatch.setenv("VQGEN_CACHE", str(cache))
    args = [
        "--model.modality", "audio", "--model.audio_decoder", "wavenet", "--model.sampling_rate", str(RATE), "--dataset", "speech",
        "--speech_sentences", "30", "--speech_speakers", *SPEAKERS, "--model.hidden_channels", "32", "--model.code_dim", "32",
        "--model.codebook_size", "128", "--model.quantizer", "vq-ema", "--model.wavenet_channels", "32", "--model.wavenet_skip_channels", "64",
        "--model.wavenet_layers", "10", "--segment_length", "2048", "--eval_segment_length", "2048", "--batch_size", "8",
        "--learning_rate", "0.003", "--max_steps", "120", "--eval_every", "120", "--save_every", "120",
        "--eval_limit", "16", "--num_examples", "1", "--output_dir", str(tmp_path),
    ]  # fmt: skip
    model, metrics = train_cli.main(args)
    held_out = AudioCrops(test, 2048, random=False)
    waves = torch.stack([held_out[i]["input_values"] for i in range(16)])
    speakers = torch.stack([held_out[i]["speaker"] for i in range(16)])
    torch.manual_seed(0)
    with torch.no_grad():
        before = VQVAEModel(model.config).eval()(waves, speakers).reconstruction_loss.item()
        after = model.eval()(waves, speakers).reconstruction_loss.item()
    assert after == pytest.approx(metrics["nll_per_sample"], rel=1e-4)
    assert before > 5.0 and after < before - 1.0, (before, after)
    # the evaluation decoded a real example with the cached sampler
    assert (tmp_path / "samples" / "step-0000120" / "reconstruction-0.wav").is_file()
