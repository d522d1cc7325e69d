"""HiFi-GAN training of the speech tokenizer's conv decoder: the discriminators and their losses,
then tiny adversarial runs through stage one's CLI on the built-in speech corpus (two voices at
8 kHz, as test_train_audio.py's runs but smaller): learning, what is saved, exact resume of the
discriminator, accumulation with bf16, and the settings refused before any work."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from stage1_tokenizer import VQVAEConfig, VQVAEModel
from stage1_tokenizer import train as train_cli
from stage1_tokenizer.audio_features import log_mel_distance
from stage1_tokenizer.common.training import frozen
from stage1_tokenizer.data import AudioCrops, SyntheticSpeech
from stage1_tokenizer.discriminators import (
    DiscriminatorConfig,
    HiFiGANDiscriminator,
    discriminator_loss,
    discriminator_step_loss,
    feature_matching_loss,
    fold_by_period,
    generator_loss,
    generator_step_loss,
)

REPO = Path(__file__).resolve().parents[2]
RATE = 8000
SPEAKERS = ["us-male-low", "rp-female"]
TINY_DISCRIMINATOR = DiscriminatorConfig(channels=4, max_channels=16)
TINY_SPEECH = [
    "--model.modality", "audio", "--model.sampling_rate", str(RATE), "--dataset", "speech", "--speech_sentences", "6",
    "--speech_speakers", *SPEAKERS, "--model.hidden_channels", "16", "--model.code_dim", "16", "--model.codebook_size", "16",
    "--model.quantizer", "vq-ema", "--model.quantizer_options", "{dead_code_steps: 10}", "--segment_length", "2048",
    "--eval_segment_length", "4096", "--eval_limit", "8", "--num_examples", "1", "--batch_size", "4", "--learning_rate", "0.003",
    "--num_workers", "0", "--log_every", "5",
]  # fmt: skip
ADVERSARIAL = ["--adversarial", "true", "--adversarial_start_step", "5", "--discriminator_channels", "4", "--discriminator_max_channels", "16"]
STEPS = ["--max_steps", "40", "--eval_every", "40", "--save_every", "10", "--keep_checkpoints", "10"]


def speech_like(batch: int, length: int, seed: int) -> torch.Tensor:
    """Harmonic tones under a slow envelope, a stand-in for voiced speech (B, 1, T)."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / RATE
    pitch = 100 + 100 * torch.rand(batch, 1, generator=generator)
    tones = sum(torch.sin(2 * torch.pi * k * pitch * t) / k for k in range(1, 6))
    return (0.3 * tones * torch.sin(torch.pi * t * 3) ** 2).unsqueeze(1)


# -- the discriminators and their losses ---------------------------------------------------------
def test_folding_by_period_reflect_pads_the_end():
    waveform = torch.arange(10.0).reshape(1, 1, 10)
    folded = fold_by_period(waveform, 3)
    assert folded.shape == (1, 1, 4, 3)
    assert folded[0, 0].tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 8, 7]]  # 10, 11 reflect to 8, 7
    assert fold_by_period(waveform[..., :9], 3)[0, 0, :, 1].tolist() == [1, 4, 7]  # a multiple: no padding; a column = every 3rd sample


def test_least_squares_losses_and_feature_matching_values():
    ones, zeros = [torch.ones(2, 5)] * 3, [torch.zeros(2, 5)] * 3
    assert discriminator_loss(ones, zeros).item() == 0  # a perfect judge
    assert discriminator_loss(zeros, ones).item() == pytest.approx(6.0)  # each of 3: (0 - 1)^2 + 1^2
    assert generator_loss(ones).item() == 0 and generator_loss(zeros).item() == pytest.approx(3.0)
    maps = [[torch.full((2, 3), 1.0), torch.full((2, 4), 2.0)]]
    assert feature_matching_loss(maps, [[torch.full((2, 3), 1.5), torch.full((2, 4), 1.0)]]).item() == pytest.approx(0.5 + 1.0)


def test_feature_matching_is_zero_for_the_real_waveform_and_only_the_generator_gets_gradients():
    discriminator = HiFiGANDiscriminator(TINY_DISCRIMINATOR)
    real = speech_like(2, 1024, seed=0)
    generated = real.clone().requires_grad_()
    with frozen(discriminator):
        loss, metrics = generator_step_loss(discriminator, real, generated)
    assert metrics["feature_matching_loss"].item() == 0
    assert loss.item() == pytest.approx(metrics["adversarial_loss"].item()) and loss.item() > 0
    loss.backward()
    assert generated.grad.abs().sum() > 0  # the adversarial loss reaches the generator
    assert all(p.grad is None and p.requires_grad for p in discriminator.parameters())  # frozen, then restored
    _, noisy = generator_step_loss(discriminator, real, real + 0.05 * torch.randn_like(real))
    assert noisy["feature_matching_loss"] > 0


def test_discriminator_steps_learn_to_tell_real_from_generated():
    """Updates on fixed batches: the loss falls well below that of a judge that cannot tell them
    apart (each sub-discriminator scoring 0.5: 8 x 0.5), and every sub-discriminator scores the
    real waveforms above the generated ones (here: white noise of the same power)."""
    torch.manual_seed(0)
    discriminator = HiFiGANDiscriminator(TINY_DISCRIMINATOR)
    optimizer = torch.optim.AdamW(discriminator.parameters(), lr=0.01)
    real = speech_like(4, 512, seed=1)
    generated = real.std() * torch.randn(real.shape, generator=torch.Generator().manual_seed(5))
    losses = []
    for _ in range(80):  # HiFi-GAN's default init barely passes the input at first: it takes a while
        loss, _ = discriminator_step_loss(discriminator, real, generated)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        real_scores, generated_scores = discriminator(real).scores, discriminator(generated).scores
    undecided = (5 + 3) * 0.5  # 5 periods, 3 scales
    assert losses[0] > undecided and losses[-1] < 0.5 * undecided, losses  # measured: 8.6 -> 1.5
    gaps = [(r.mean() - g.mean()).item() for r, g in zip(real_scores, generated_scores)]
    assert min(gaps) > 0 and sum(gaps) / len(gaps) > 0.5, gaps  # measured: 0.06 to 1.2, mean 0.7


def test_the_raw_scale_is_spectrally_normalized():
    discriminator = HiFiGANDiscriminator(TINY_DISCRIMINATOR)
    for _ in range(20):  # power iteration, one step per forward pass in training mode
        discriminator(speech_like(1, 1024, seed=2))
    for conv in [*discriminator.scales[0].convs, discriminator.scales[0].post]:
        assert torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2).item() == pytest.approx(1.0, rel=0.05)
    assert torch.linalg.matrix_norm(discriminator.scales[1].convs[0].weight.detach().flatten(1), ord=2).item() != pytest.approx(1.0, rel=0.05)


def test_the_mel_loss_joins_the_stft_loss_with_its_weight():
    config = VQVAEConfig(modality="audio", sampling_rate=RATE, hidden_channels=8, code_dim=8, codebook_size=8)
    model = VQVAEModel(config)
    waves = speech_like(2, 2048, seed=3)
    loss, metrics, (real, generated) = train_cli.make_compute_loss(False, 5.0, RATE, adversarial=True)(model, {"input_values": waves})
    output = model(waves)  # the codebook set by k-means at the first call, as above
    mel = log_mel_distance(output.reconstruction, waves, RATE).mean()
    assert metrics["mel_loss"].item() == pytest.approx(mel.item())
    assert loss.item() == pytest.approx(output.loss.item() + 5.0 * mel.item(), rel=1e-5)
    assert real is waves and torch.equal(generated, output.reconstruction)


# -- tiny runs through the CLI ----------------------------------------------------------------
@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, monkeypatch_module):
    """The corpus, synthesized into a cache of this module's that the CLI reads too."""
    cache = tmp_path_factory.mktemp("speech-cache")
    monkeypatch_module.setenv("VQGEN_CACHE", str(cache))
    return SyntheticSpeech("test", RATE, speakers=SPEAKERS, cache_dir=cache)  # the CLI's held-out split


def run(root: Path, name: str, *flags: str):
    return train_cli.main([*TINY_SPEECH, "--output_dir", str(root / name), *flags])


@pytest.fixture(scope="module")
def adversarial_run(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("adversarial")
    model, metrics = run(root, "straight", *ADVERSARIAL, *STEPS)
    return root, model, metrics


def scalars(output: Path) -> dict[str, list]:
    events = EventAccumulator(str(next((output / "logs").rglob("events.out.tfevents.*")))).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_adversarial_training_learns_and_saves_the_tokenizer_alone(corpus, adversarial_run):
    root, model, metrics = adversarial_run
    out = root / "straight"
    held_out = AudioCrops(corpus, 4096, random=False)
    waves = torch.stack([held_out[i]["input_values"] for i in range(8)])
    speakers = torch.stack([held_out[i]["speaker"] for i in range(8)])
    torch.manual_seed(0)
    untrained = VQVAEModel(model.config).eval()
    with torch.no_grad():
        before = log_mel_distance(untrained.decode(untrained.encode(waves), speakers), waves, RATE).mean().item()
    # measured: 5.14 untrained, 3.5 after 40 steps
    assert metrics["log_mel_distance"] < 0.8 * before, (before, metrics)
    logged = scalars(out)
    stft, mel = ([value for _, value in logged[f"train/{name}"]] for name in ("reconstruction_loss", "mel_loss"))
    assert stft[-1] < 0.7 * stft[0] and mel[-1] < mel[0], (stft, mel)  # measured: 8.9 -> 5.5 and 3.8 -> 3.4
    assert logged["train/loss"][0][0] == 5 and logged["train/mel_loss"][0][0] == 5
    for name in ("discriminator_loss", "adversarial_loss", "feature_matching_loss"):  # from --adversarial_start_step 5 on
        assert logged[f"train/{name}"][0][0] == 10, name
    # the saved tokenizer is the tokenizer alone: its keys, loadable as any
    saved = load_file(str(out / "model" / "model.safetensors"))
    assert saved.keys() == VQVAEModel(model.config).state_dict().keys()
    assert not any(key.startswith(("periods.", "scales.")) for key in saved)
    loaded = VQVAEModel.from_pretrained(out / "model").eval()
    with torch.no_grad():
        assert torch.equal(loaded.decode(loaded.encode(waves), speakers), model.eval().decode(model.encode(waves), speakers))
    # the checkpoints hold the discriminator and its optimizer, stepped from step 5 on
    last = out / "checkpoints" / "step-0000040"
    assert load_file(str(last / "model_1.safetensors")).keys() == HiFiGANDiscriminator(TINY_DISCRIMINATOR).state_dict().keys()
    optimizer = torch.load(last / "optimizer_1.bin", weights_only=True)
    assert {int(s["step"]) for s in optimizer["state"].values()} == {40 - 5}
    assert json.loads((last / "trainer_state.json").read_text())["adversary"]["channels"] == 4


def test_resume_continues_the_tokenizer_and_the_discriminator_exactly(adversarial_run, copy_run):
    """12 utterances / 4 = 3 steps per epoch: stopped at step 20 (mid-epoch, after the
    discriminator's start) and resumed, both networks and the discriminator's optimizer end as
    in the uninterrupted run."""
    root, _, _ = adversarial_run
    resumed = copy_run(root / "straight", root / "stopped", 20)
    run(root, "stopped", *ADVERSARIAL, *STEPS, "--resume_from_checkpoint", "latest")
    straight, again = root / "straight" / "checkpoints" / "step-0000040", resumed / "checkpoints" / "step-0000040"
    for name in ("model.safetensors", "model_1.safetensors"):
        first, second = load_file(str(straight / name)), load_file(str(again / name))
        assert first.keys() == second.keys()
        for key in first:
            assert torch.equal(first[key], second[key]), (name, key)
    first, second = (torch.load(path / "optimizer_1.bin", weights_only=True)["state"] for path in (straight, again))
    for index in first:
        for key in first[index]:
            assert torch.equal(first[index][key], second[index][key]), (index, key)


def test_resuming_with_another_discriminator_or_none_is_refused(adversarial_run, copy_run):
    root, _, _ = adversarial_run
    copy_run(root / "straight", root / "other", 10)
    wider = [*ADVERSARIAL[:-1], "8"]
    with pytest.raises(ValueError, match=r"step-0000010 was trained with a discriminator .*'max_channels': 16.*this run has a discriminator .*'max_channels': 8"):
        run(root, "other", *wider, *STEPS, "--resume_from_checkpoint", "latest")
    with pytest.raises(ValueError, match="step-0000010 was trained with a discriminator .* this run has no discriminator"):
        run(root, "other", *STEPS, "--resume_from_checkpoint", "latest")


def test_accumulation_under_bf16_steps_the_discriminator_once_per_step(corpus, tmp_path):
    """In a process of its own (Accelerate keeps one precision per process)."""
    out = tmp_path / "bf16"
    flags = [*TINY_SPEECH, *ADVERSARIAL[:3], "0", *ADVERSARIAL[4:], "--mixed_precision", "bf16", "--gradient_accumulation_steps", "2",
             "--batch_size", "2", "--max_steps", "3", "--eval_every", "3", "--save_every", "3", "--output_dir", str(out)]  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "stage1_tokenizer.train", *flags], capture_output=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    optimizer = torch.load(out / "checkpoints" / "step-0000003" / "optimizer_1.bin", weights_only=True)
    assert {int(s["step"]) for s in optimizer["state"].values()} == {3}  # 6 micro-batches, 3 updates
    assert torch.isfinite(torch.tensor(json.loads((out / "model" / "eval_results.json").read_text())["log_mel_distance"]))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model.modality", "image", "--dataset", "fashion_mnist"], r"--adversarial trains the conv audio decoder, and this is an image model"),
        (["--model.audio_decoder", "wavenet"], r"this is a speech model with the wavenet decoder: set .*--model.audio_decoder conv"),
        (["--adversarial_start_step", "40"], r"--adversarial_start_step got 40: it must be an integer in \[0, --max_steps 40\)"),
        (["--mixed_precision", "fp16", "--gradient_accumulation_steps", "2"], r"--mixed_precision fp16 with --gradient_accumulation_steps 2 .*Use --mixed_precision bf16"),
        (["--discriminator_channels", "0"], r"--discriminator_channels / --discriminator_max_channels: channels 0"),
        (["--feature_matching_weight", "-1"], r"--feature_matching_weight got -1.0: it must be a finite number >= 0"),
        (["--discriminator_learning_rate", "0"], r"--discriminator_learning_rate got 0.0"),
    ],
)
def test_bad_adversarial_settings_fail_before_any_work(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        run(tmp_path, "bad", *ADVERSARIAL, *STEPS, *flags)
    assert not (tmp_path / "bad").exists()


def test_mel_loss_and_discriminator_flags_need_their_model_and_adversary(tmp_path):
    with pytest.raises(ValueError, match=r"--mel_loss_weight 5.0 trains the conv audio decoder, and this is an image model"):
        run(tmp_path, "bad", "--model.modality", "image", "--dataset", "fashion_mnist", "--mel_loss_weight", "5")
    with pytest.raises(ValueError, match=r"--adversarial_start_step, --discriminator_channels set without --adversarial"):
        run(tmp_path, "bad", "--adversarial_start_step", "5", "--discriminator_channels", "8")
    assert not (tmp_path / "bad").exists()


def test_the_recipe_is_the_speech_tokenizer_with_the_adversary():
    adversarial = train_cli.parse_args([str(REPO / "recipes" / "speech_adversarial.yaml")])
    plain = train_cli.parse_args([str(REPO / "recipes" / "speech.yaml")])
    assert adversarial[0] == plain[0]  # the same tokenizer: the discriminators are no part of it
    decoder = adversarial[3]
    assert decoder.adversarial and decoder.mel_loss_weight == 22.5 and decoder.discriminator_channels == 16
    assert adversarial[2].batch_size == 16 and adversarial[1].segment_length == 8192
