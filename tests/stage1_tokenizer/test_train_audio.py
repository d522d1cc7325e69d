"""Real training of the speech tokenizer on the built-in espeak-ng corpus, through stage one's CLI:
held-out reconstruction improves, and decoding with another speaker converts the voice, as judged
by a speaker classifier trained on the corpus (four voices: chance is 1 in 4)."""

import json

import numpy as np
import pytest
import torch

from stage1_tokenizer import VQVAEConfig, VQVAEModel
from stage1_tokenizer import train as train_cli
from stage1_tokenizer.audio_features import log_mel_distance
from stage1_tokenizer.evaluation.phonemes import Phoneme, corpus_frame_labels
from stage1_tokenizer.evaluation.speech_recognizer import SpeechRecognizer, word_error_rate
from stage1_tokenizer.evaluation.voice_conversion import corpus_speaker_judge, judge_conversions, tokenizer_converter
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


@pytest.fixture(scope="module")
def judge(corpus):
    _, train, _ = corpus
    return corpus_speaker_judge(train)  # fitted on the train split's originals


def test_decoding_with_another_speaker_converts_the_voice(corpus, trained, judge):
    _, _, test = corpus
    _, model, _ = trained
    report = judge_conversions(tokenizer_converter(model), test, judge, progress=False)  # every utterance in every voice
    chance = 1 / len(SPEAKERS)
    assert report["chance"] == chance and report["utterances"] == len(test)
    assert report["judge_on_originals"] >= 0.9  # the judge knows the held-out voices
    # measured (2 threads; 1 thread): reconstructions 0.73; 0.99, conversions judged as the target
    # 0.63; 0.66 and as the source 0.15; 0.08. A small codebook (K=32) keeps the speaker out of the
    # codes, as the paper's bottleneck argument asks.
    assert report["reconstructions_judged_as_source"] >= 0.6, report
    assert report["conversions_judged_as_target"] >= 2 * chance, report
    assert report["conversions_judged_as_source"] <= chance, report
    confusion = torch.tensor(report["conversion_confusion"])  # rows: the voice decoded as
    assert torch.allclose(confusion.sum(1), torch.ones(len(SPEAKERS)))
    # most target voices are heard, not one or two (measured: three of four always, while rp-female
    # conversions were heard as the other high female voice, us-female-high)
    assert (confusion.diagonal() > 2 * chance).sum() >= len(SPEAKERS) - 1, confusion


def test_conversion_report_counts_what_the_judges_hear(corpus, judge):
    """The report's bookkeeping on a converter that changes nothing: every "conversion" is still the
    source, so it is judged as the source as often as the originals, and keeps their words."""
    _, _, test = corpus
    unchanged = lambda waveform, voices: waveform.reshape(1, -1).expand(len(voices), -1)  # noqa: E731
    recognizer = SpeechRecognizer.for_corpus(RATE)
    report = judge_conversions(unchanged, test, judge, recognizer, sentences=10, wer_sentences=1, progress=False)
    assert report["utterances"] == 10 * len(SPEAKERS) and report["wer_utterances"] == len(SPEAKERS)
    assert report["reconstructions_judged_as_source"] == report["judge_on_originals"] >= 0.9
    assert report["conversions_judged_as_source"] == report["judge_on_originals"]
    assert report["conversions_judged_as_target"] <= 1 - report["judge_on_originals"]
    assert report["wer_reconstructions"] == report["wer_conversions"] == report["wer_originals"] < 0.5
    with pytest.raises(ValueError, match="sentences must be a positive number of sentences"):
        judge_conversions(unchanged, test, judge, sentences=0)  # refused before any work
    first = [test[i] for i in range(len(SPEAKERS))]
    heard = [recognizer.transcribe(item["input_values"], RATE) for item in first]
    assert report["wer_originals"] == word_error_rate([test.texts[i] for i in range(len(first))], heard)


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


def test_codes_predict_phonemes_above_the_majority_class(corpus, trained, tmp_path, load_benchmark):
    """benchmarks/speech_phonemes.py's analysis (the paper's section 4.3) on the trained tokenizer:
    code -> most frequent phoneme, fitted on train utterances, scored on held-out ones."""
    speech_phonemes = load_benchmark("speech_phonemes")
    _, train, test = corpus
    _, model, _ = trained
    fit = speech_phonemes.labelled_utterances(train, limit=10 * len(SPEAKERS))  # 10 sentences, every voice
    held_out = speech_phonemes.labelled_utterances(test, limit=6 * len(SPEAKERS))
    result = speech_phonemes.analyze(model, fit, held_out)["codes"]
    hop = model.config.total_stride
    # one label per code of every held-out frame that holds audio, and the labels are the library's own
    assert result["test_frames"] == len(result["labels"]) == sum(-(-u.waveform.shape[-1] // hop) for u in held_out)
    first = held_out[0].waveform.shape[-1]
    assert result["labels"][: -(-first // hop)] == corpus_frame_labels(test.texts[0], test.speakers[0], hop, RATE)
    assert 0 <= result["majority_baseline"] <= result["accuracy"] <= result["held_out_fit_accuracy"] <= 1
    # measured (1 thread): 11.5% of the held-out frames right against 4.3% for the train majority phoneme
    # ("_:"), 12.8% with the map fitted on held-out; the untrained control 9.9%
    scores = {name: result[name] for name in ("accuracy", "majority_baseline", "held_out_fit_accuracy")}
    assert result["accuracy"] >= result["majority_baseline"] + 0.04, scores
    picture = tmp_path / "confusion.png"
    speech_phonemes.plot_confusion(result["labels"], result["predicted"], picture, top=10)
    assert picture.stat().st_size > 0
    crops, speakers = speech_phonemes.middle_crops(fit, 8, 4096)
    control = speech_phonemes.analyze(speech_phonemes.untrained_control(model.config, 0, crops, speakers), fit, held_out)["codes"]
    assert 0 <= control["accuracy"] <= 1 and control["codes_used"] > 1  # k-means gave the random encoder a used codebook


def test_two_level_code_streams_cover_the_utterance(load_benchmark):
    """Bottom, top and (bottom, top) pair streams of a two-level tokenizer on an utterance whose
    length is no multiple of the stride: the padding's frames are dropped, the pair is exact."""
    speech_phonemes = load_benchmark("speech_phonemes")
    config = VQVAEConfig(modality="audio", sampling_rate=RATE, num_levels=2, hidden_channels=8, code_dim=8, codebook_size=16)
    model = VQVAEModel(config).eval()
    length = 5 * 128 + 30  # padded to 6 top frames = 12 bottom frames, of which the last holds no audio
    phonemes = [Phoneme("a", 0, 300), Phoneme("b", 300, length)]
    utterance = speech_phonemes.LabelledUtterance(torch.rand(1, length) - 0.5, 0, phonemes)
    streams = speech_phonemes.code_streams(model, utterance.waveform)
    shapes = {name: (symbols.size, hop) for name, (symbols, hop) in streams.items()}
    assert shapes == {"bottom": (12, 64), "top": (6, 128), "bottom+top": (12, 64)}
    bottom, top = streams["bottom"][0], streams["top"][0]
    assert (streams["bottom+top"][0] == bottom * 16 + top.repeat(2)).all()
    symbols, labels = speech_phonemes.aligned_frames(*streams["bottom"], utterance, config.total_stride)
    assert symbols.size == len(labels) == 11  # ceil(670 / 64): the 12th code covers only padding
    assert labels[4:6] == ["a", "b"]  # frame 4 is samples 256-319: 44 of "a"; frame 5 all "b"
    symbols, labels = speech_phonemes.aligned_frames(*streams["top"], utterance, config.total_stride)
    assert symbols.size == len(labels) == 6


def test_the_phoneme_map_is_fitted_on_train_and_scored_on_held_out(load_benchmark):
    speech_phonemes = load_benchmark("speech_phonemes")
    train_codes, train_labels = np.array([0, 0, 0, 1, 1, 2]), ["x", "x", "y", "y", "y", "y"]
    test_codes, test_labels = np.array([0, 1, 2, 3, 3]), ["x", "x", "y", "x", "y"]  # code 3 is new: the majority "y"
    result = speech_phonemes.phoneme_accuracy(train_codes, train_labels, test_codes, test_labels)
    assert result["predicted"] == ["x", "y", "y", "y", "y"] and result["majority_phoneme"] == "y"
    assert result["accuracy"] == pytest.approx(3 / 5) and result["majority_baseline"] == pytest.approx(2 / 5)
    # fitted on held-out, code 3 ties x and y: the first in sorted order, x
    assert result["held_out_fit_accuracy"] == pytest.approx(4 / 5) and result["unseen_frames"] == pytest.approx(2 / 5)
    assert result["codes_used"] == 4
