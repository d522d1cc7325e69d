"""Speech stage two and the `vq-speech-gen` pipeline, end to end on the espeak-ng corpus: codes of
whole utterances, a speaker-conditioned WaveNet prior trained on them through stage two's CLI, the
bundle it writes, and the pipeline in a fresh process through `transformers.pipeline`."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import pipelines
from stage1_tokenizer import encode as encode_cli
from stage1_tokenizer import train as tokenizer_cli
from stage1_tokenizer.code_dataset import load_code_dataset
from stage2_prior import VQGenerator, WaveNetPrior
from stage2_prior import train as prior_cli

RATE = 8000
SPEAKERS = ["us-male-low", "us-female-high", "gb-female"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def speech_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VQGEN_CACHE", str(root / "cache"))
        tokenizer_cli.main([
            "--model.modality", "audio", "--model.sampling_rate", str(RATE), "--dataset", "speech", "--speech_sentences", "12",
            "--speech_speakers", *SPEAKERS, "--model.hidden_channels", "32", "--model.code_dim", "32", "--model.codebook_size", "64",
            "--model.quantizer", "vq-ema", "--segment_length", "4096", "--eval_segment_length", "4096", "--batch_size", "8",
            "--learning_rate", "0.002", "--max_steps", "60", "--eval_every", "60", "--save_every", "60",
            "--output_dir", str(root / "tokenizer"),
        ])  # fmt: skip
        for split in ("train", "test"):
            encode_cli.main(["--tokenizer", str(root / "tokenizer" / "model"), "--dataset", "speech", "--split", split,
                             "--speech_sentences", "12" if split == "train" else "6", "--output_dir", str(root / f"codes-{split}")])  # fmt: skip
        prior, metrics = prior_cli.main([
            "--prior", "wavenet", "--model.residual_channels", "32", "--model.skip_channels", "64", "--model.num_layers", "8", "--model.dilation_cycle", "4",
            "--tokenizer", str(root / "tokenizer" / "model"), "--train_codes", str(root / "codes-train"),
            "--eval_codes", str(root / "codes-test"), "--code_length", "64", "--batch_size", "16", "--learning_rate", "0.003",
            "--max_steps", "150", "--eval_every", "150", "--save_every", "150", "--samples_per_class", "1",
            "--output_dir", str(root / "prior"), "--bundle_dir", str(root / "bundle"),
        ])  # fmt: skip
    return root, prior, metrics


def test_speech_codes_and_a_speaker_conditioned_prior(speech_bundle):
    root, prior, metrics = speech_bundle
    codes, metadata = load_code_dataset(root / "codes-train")
    # whole utterances: sequences as long as each utterance's audio allows, speaker ids as labels
    assert metadata["modality"] == "audio" and metadata["code_strides"] == [64]
    assert metadata["id2label"] == {str(i): name for i, name in enumerate(SPEAKERS)}
    lengths = {len(c) for c in codes["codes_0"]}
    assert len(codes) == 12 * len(SPEAKERS) and len(lengths) > 5 and min(lengths) > 64
    assert sorted(set(codes["label"])) == [0, 1, 2]
    assert isinstance(prior, WaveNetPrior) and prior.config.num_classes == 3 and prior.config.code_shape == [64]
    # the prior learned: well below a uniform guess over K=64 codes
    assert metrics["nll_nats_per_code"] < math.log(64) - 0.5, metrics
    assert (root / "prior" / "samples" / "step-0000150" / "us-male-low.wav").is_file()


def test_wavenet_prior_samples_any_length_and_the_transformer_refuses_too_long(speech_bundle):
    _, prior, _ = speech_bundle
    prior.eval()
    codes = prior.generate(2, (200,), condition=torch.tensor([0, 2]), generator=torch.Generator().manual_seed(0))
    assert codes.shape == (2, 200) and codes.max() < 64
    same = prior.generate(2, (200,), condition=torch.tensor([0, 2]), generator=torch.Generator().manual_seed(0), use_cache=False)
    assert torch.equal(codes, same)
    from stage2_prior import TransformerConfig, TransformerPrior

    transformer = TransformerPrior(TransformerConfig(codebook_size=64, code_shape=(32,), hidden_size=16, num_layers=1, num_heads=2))
    assert transformer.generate(1, (20,)).shape == (1, 20)
    with pytest.raises(ValueError, match="sequences of at most 32"):
        transformer.generate(1, (40,))


def speak_in_fresh_process(bundle: Path, code: str) -> dict:
    """Runs `code` (which fills `result`) after loading the pipeline in a new interpreter."""
    script = (
        "import json, sys, numpy as np, pipelines, transformers\n"
        f"speak = transformers.pipeline('vq-speech-gen', model={str(bundle)!r})\n"
        "result = {}\n" + code + "\njson.dump(result, sys.stdout)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pipeline_generates_and_converts_in_a_fresh_process(speech_bundle):
    root, _, _ = speech_bundle
    result = speak_in_fresh_process(
        root / "bundle",
        "out = speak(speaker='gb-female', seconds=0.5, seed=3)\n"
        "again = speak('gb-female', seconds=0.5, seed=3)\n"
        "other = speak(speaker='us-male-low', seconds=0.5, seed=3)\n"
        "converted = speak(speaker='us-male-low', audio=out['audio'], sampling_rate=out['sampling_rate'])\n"
        "result.update(rate=out['sampling_rate'], length=len(out['audio']), dtype=str(out['audio'].dtype),\n"
        "    same=bool(np.array_equal(out['audio'], again['audio'])), differs=not np.array_equal(out['audio'], other['audio']),\n"
        "    converted_length=len(converted['audio']), converted_differs=not np.allclose(converted['audio'], out['audio']),\n"
        "    peak=float(np.abs(out['audio']).max()))",
    )
    assert result["rate"] == RATE and result["dtype"] == "float32"
    assert result["length"] == math.ceil(0.5 * RATE / 64) * 64  # a whole number of codes
    assert result["same"] and result["differs"] and 0 < result["peak"] <= 1
    assert result["converted_length"] == result["length"] and result["converted_differs"]


def test_pipeline_inputs_resampling_errors_and_save_reload(speech_bundle, tmp_path):
    root, _, _ = speech_bundle
    speak = transformers.pipeline("vq-speech-gen", model=str(root / "bundle"))
    t = np.arange(RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    at_16k = speak(speaker=1, audio=np.repeat(tone, 2), sampling_rate=2 * RATE)  # resampled to the model's rate
    assert len(at_16k["audio"]) == RATE
    as_dict = speak(speaker="us-female-high", audio={"array": tone, "sampling_rate": RATE})
    assert len(as_dict["audio"]) == RATE
    with pytest.raises(ValueError, match="unknown speaker name 'gb-femal'.*the known speakers are 'us-male-low', 'us-female-high', 'gb-female'"):
        speak(speaker="gb-femal", seconds=1)
    with pytest.raises(ValueError, match="speaker id 7 is not one of this model's 3 speakers"):
        speak(speaker=7, seconds=1)
    with pytest.raises(ValueError, match="pass speaker="):
        speak(seconds=1)
    with pytest.raises(ValueError, match="seconds must be a finite number > 0"):
        speak(speaker=0, seconds=0)
    with pytest.raises(ValueError, match="either audio= .* or seconds="):
        speak(speaker=0, seconds=1, audio=tone, sampling_rate=RATE)
    with pytest.raises(ValueError, match="pass sampling_rate="):
        speak(speaker=0, audio=tone)
    with pytest.raises(ValueError, match="mono waveform"):
        speak(speaker=0, audio=np.stack([tone, tone]), sampling_rate=RATE)
    with pytest.raises(ValueError, match="silent"):
        speak(speaker=0, audio=np.zeros(RATE, dtype=np.float32), sampling_rate=RATE)
    # integer PCM (what scipy.io.wavfile returns) is scaled by its type's range, not clipped
    pcm = np.round(tone * 32767).astype(np.int16)
    from_pcm = speak(speaker=1, audio=pcm, sampling_rate=RATE)["audio"]
    assert np.array_equal(from_pcm, speak(speaker=1, audio=pcm.astype(np.float32) / 32768, sampling_rate=RATE)["audio"])
    # save, reload: the same speech for the same seed, and a speech model card
    speak.save_pretrained(tmp_path / "saved")
    reloaded = transformers.pipeline("vq-speech-gen", model=str(tmp_path / "saved"))
    a, b = speak(speaker=2, seconds=0.3, seed=1), reloaded(speaker=2, seconds=0.3, seed=1)
    assert np.array_equal(a["audio"], b["audio"])
    card = (tmp_path / "saved" / "README.md").read_text()
    assert 'transformers.pipeline("vq-speech-gen"' in card and "Speakers: `us-male-low`" in card and "log-mel" in card
    # the speech pipeline refuses an image bundle
    with pytest.raises(TypeError, match="use vq-image-gen"):
        pipelines.VQSpeechGenerationPipeline(model=_image_bundle())


def _image_bundle() -> VQGenerator:
    from stage1_tokenizer import VQVAEConfig, VQVAEModel
    from stage2_prior import TransformerConfig, TransformerPrior

    tokenizer = VQVAEModel(VQVAEConfig(hidden_channels=8, code_dim=4, codebook_size=16))
    prior = TransformerPrior(TransformerConfig(codebook_size=16, code_shape=(7, 7), hidden_size=16, num_layers=1, num_heads=2))
    return VQGenerator.from_parts(tokenizer, [prior])


def test_speech_bundles_refuse_priors_that_do_not_fit(speech_bundle):
    root, prior, _ = speech_bundle
    from stage1_tokenizer import VQVAEModel
    from stage2_prior import WaveNetConfig

    tokenizer = VQVAEModel.from_pretrained(root / "tokenizer" / "model")
    fits = dict(codebook_size=64, tokenizer_fingerprint=prior.config.tokenizer_fingerprint)
    with pytest.raises(ValueError, match=r"5 speakers \(the tokenizer's: 3\)"):
        VQGenerator.from_parts(tokenizer, [WaveNetPrior(WaveNetConfig(code_shape=(64,), num_classes=5, num_layers=2, **fits))])
    with pytest.raises(ValueError, match=r"speech codes are sequences"):
        VQGenerator.from_parts(tokenizer, [WaveNetPrior(WaveNetConfig(code_shape=(8, 8), num_classes=3, num_layers=2, **fits))])
    with pytest.raises(ValueError, match="codebook size 32"):
        VQGenerator.from_parts(tokenizer, [WaveNetPrior(WaveNetConfig(code_shape=(64,), num_classes=3, num_layers=2, codebook_size=32))])


def test_push_to_hub_sends_a_speech_bundle_and_its_card(speech_bundle, fake_hub):
    import base64

    root, _, _ = speech_bundle
    pipelines.push_to_hub(root / "bundle", "me/vqgen-speech", token="hf_secret_token_123")
    commit = [c for c in fake_hub if "/commit/" in c["path"]][-1]
    files = {op["value"]["path"]: base64.b64decode(op["value"]["content"]) for op in commit["body"][1:] if op["key"] == "file"}
    assert sorted(files) == ["README.md", "config.json", "model.safetensors", "spectrogram.png"]  # + the card's picture
    assert files["model.safetensors"] == (root / "bundle" / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert 'transformers.pipeline("vq-speech-gen", model="me/vqgen-speech")' in card
    assert 'generate(speaker="us-male-low", seconds=2)' in card and "125 codes per second of 8000 Hz audio" in card
    assert "held-out reconstruction log-mel distance" in card and "held-out NLL (nats per code)" in card


def test_two_level_speech_top_then_bottom_prior_and_pipeline(speech_bundle, tmp_path, monkeypatch):
    """VQ-VAE-2's hierarchy on speech: code sequences per level, a top prior, a bottom prior whose
    windows sit under the top window (its context), one bundle, one pipeline call."""
    root, _, _ = speech_bundle
    monkeypatch.setenv("VQGEN_CACHE", str(root / "cache"))
    from stage1_tokenizer import VQVAEConfig, VQVAEModel
    from stage2_prior import generator as bundle_cli

    torch.manual_seed(0)
    tokenizer = VQVAEModel(VQVAEConfig(modality="audio", sampling_rate=RATE, num_levels=2, hidden_channels=16, code_dim=8,
                                       codebook_size=32, quantizer="vq", speakers=SPEAKERS))  # fmt: skip
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    for split, count in (("train", "12"), ("test", "6")):
        encode_cli.main(["--tokenizer", str(tmp_path / "tokenizer"), "--dataset", "speech", "--split", split,
                         "--speech_sentences", count, "--output_dir", str(tmp_path / f"codes-{split}")])  # fmt: skip
    codes, _ = load_code_dataset(tmp_path / "codes-train")
    assert all(2 * len(top) == len(bottom) for top, bottom in zip(codes["codes_0"], codes["codes_1"]))
    common = ["--tokenizer", str(tmp_path / "tokenizer"), "--train_codes", str(tmp_path / "codes-train"),
              "--eval_codes", str(tmp_path / "codes-test"), "--batch_size", "8", "--max_steps", "4", "--eval_every", "4",
              "--save_every", "4", "--prior", "transformer",
              "--model.hidden_size", "16", "--model.num_layers", "1", "--model.num_heads", "2"]  # fmt: skip
    prior_cli.main([*common, "--level", "0", "--code_length", "16", "--output_dir", str(tmp_path / "top")])
    bottom, metrics = prior_cli.main([*common, "--level", "1", "--code_length", "32", "--output_dir", str(tmp_path / "bottom")])
    assert bottom.config.code_shape == [32] and bottom.config.context_shape == [16] and math.isfinite(metrics["nll_nats_per_code"])
    bundle_cli.main(["--tokenizer", str(tmp_path / "tokenizer"), "--priors", str(tmp_path / "top" / "model"),
                     str(tmp_path / "bottom" / "model"), "--output_dir", str(tmp_path / "bundle")])  # fmt: skip
    speak = transformers.pipeline("vq-speech-gen", model=str(tmp_path / "bundle"))
    window = 16 * 128 / RATE  # the top window: 16 codes of 128 samples
    assert len(speak(speaker="gb-female", seconds=window, seed=0)["audio"]) == 16 * 128
    with pytest.raises(ValueError, match=r"TransformerPrior samples at most 16 codes \(0.26 s\) at level 0"):
        speak(speaker="gb-female", seconds=2 * window)
