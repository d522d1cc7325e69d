"""The speech tokenizer: signal tools checked against their formulas, the WaveNet decoder's causality
and cached decoding, speaker conditioning, input checks and save/load."""

import math

import pytest
import torch

from stage1_tokenizer import VQVAEConfig, VQVAEModel
from stage1_tokenizer.audio_features import (
    log_mel_distance,
    mu_law_decode,
    mu_law_encode,
    multi_resolution_stft_loss,
)
from stage1_tokenizer.networks import ResidualBlock

RATE = 8000


def audio_config(**overrides):
    values = dict(
        modality="audio", sampling_rate=RATE, hidden_channels=16, code_dim=8, codebook_size=32, quantizer="vq",
        speakers=["low", "high"], speaker_dim=8, wavenet_channels=16, wavenet_skip_channels=16, wavenet_layers=6,
        wavenet_dilation_cycle=3, stft_resolutions=[[256, 64], [512, 128]],
    )  # fmt: skip
    return VQVAEConfig(**{**values, **overrides})


def test_mu_law_matches_the_formula():
    mu = 255
    x = torch.linspace(-1, 1, 1001)
    classes = mu_law_encode(x)
    expected = torch.round((torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu) + 1) / 2 * mu).long()
    assert torch.equal(classes, expected)
    assert classes[0] == 0 and classes[-1] == 255 and mu_law_encode(torch.zeros(())) == 128
    # decoding inverts encoding up to the class width, which is finest near zero
    error = (mu_law_decode(classes) - x).abs()
    assert error.max() < 0.025 and error[x.abs() < 0.01].max() < 3e-4
    assert torch.equal(mu_law_encode(mu_law_decode(torch.arange(256))), torch.arange(256))


def test_stft_loss_and_log_mel_distance_values():
    target = torch.randn(2, 1, 4096, generator=torch.Generator().manual_seed(0)) * 0.3
    resolutions = [[512, 128], [1024, 256], [2048, 512]]
    assert multi_resolution_stft_loss(target, target, resolutions).item() == 0.0
    # half the amplitude: spectral convergence 0.5, log-magnitude distance log 2
    assert multi_resolution_stft_loss(0.5 * target, target, resolutions).item() == pytest.approx(0.5 + math.log(2), abs=1e-3)
    assert torch.equal(log_mel_distance(target, target, RATE), torch.zeros(2))
    # twice the amplitude: four times the power in every mel band
    assert log_mel_distance(2 * target, target, RATE) == pytest.approx(torch.full((2,), math.log(4)), abs=1e-3)


@pytest.mark.parametrize("levels", [1, 2])
def test_wavenet_decoder_is_causal_in_the_samples(levels):
    torch.manual_seed(0)
    model = VQVAEModel(audio_config(audio_decoder="wavenet", num_levels=levels)).eval()
    waves = torch.randn(1, 1, 256).clamp(-1, 1) * 0.3
    codes = model.encode(waves)
    latents = model._decoder_input([q.codebook[c] for q, c in zip(model.quantizers, codes)])
    speaker = model.speaker_vectors(torch.tensor([1]), 1)
    classes = mu_law_encode(waves[:, 0])
    logits = model.decoder(classes, latents, speaker)
    for position in (0, 1, 37, 128, 255):
        changed = classes.clone()
        changed[:, position:] = torch.randint(0, 256, changed[:, position:].shape)
        other = model.decoder(changed, latents, speaker)
        assert torch.allclose(other[:, : position + 1], logits[:, : position + 1], atol=1e-5), position  # t sees samples < t
        if position + 1 < 256:
            assert not torch.allclose(other[:, position + 1 :], logits[:, position + 1 :])
    # the codes and the speaker reach every sample
    assert not torch.allclose(model.decoder(classes, latents + torch.randn_like(latents), speaker)[:, :64], logits[:, :64])
    assert not torch.allclose(model.decoder(classes, latents, model.speaker_vectors(torch.tensor([0]), 1)), logits)


@pytest.mark.parametrize("levels", [1, 2])
def test_cached_wavenet_decoding_equals_uncached(levels):
    torch.manual_seed(0)
    model = VQVAEModel(audio_config(audio_decoder="wavenet", num_levels=levels)).eval()
    codes = model.encode(torch.randn(2, 1, 128).clamp(-1, 1) * 0.3)
    fast = model.decode(codes, speaker=torch.tensor([0, 1]), generator=torch.Generator().manual_seed(3))
    slow = model.decode(codes, speaker=torch.tensor([0, 1]), generator=torch.Generator().manual_seed(3), use_cache=False)
    assert fast.shape == (2, 1, 128) and torch.equal(fast, slow)
    # every value is a mu-law level, and another seed samples another waveform
    assert torch.equal(mu_law_decode(mu_law_encode(fast)), fast)
    assert not torch.equal(model.decode(codes, speaker=torch.tensor([0, 1]), generator=torch.Generator().manual_seed(4)), fast)


def test_conv_decoder_uses_the_speaker_and_the_codes():
    torch.manual_seed(0)
    model = VQVAEModel(audio_config(num_levels=2)).eval()
    waves = (torch.randn(2, 1, 512) * 0.3).clamp(-1, 1)
    output = model(waves, speaker=torch.tensor([0, 1]))
    assert [c.shape for c in output.codes] == [(2, 4), (2, 8)]
    assert output.loss.item() == pytest.approx((output.reconstruction_loss + output.quantizer_loss).item())
    codes = output.codes
    decoded = model.decode(codes, speaker=torch.tensor([0, 1]))
    assert torch.allclose(decoded, output.reconstruction.clamp(-1, 1), atol=1e-6)  # forward's codes decode to forward's output
    assert not torch.allclose(model.decode(codes, speaker=torch.tensor([1, 0])), decoded)
    assert model.code_bits == pytest.approx((RATE / 64 + RATE / 128) * 5)  # bits per second, both levels


def test_audio_bad_inputs_are_refused():
    model = VQVAEModel(audio_config())
    with pytest.raises(ValueError, match=r"\(B, 1, T\)"):
        model(torch.zeros(2, 512), speaker=0)
    with pytest.raises(ValueError, match="multiple of 64"):
        model(torch.zeros(1, 1, 500), speaker=0)
    with pytest.raises(ValueError, match="pass speaker= ids in \\[0, 1\\]"):
        model(torch.zeros(1, 1, 512))
    with pytest.raises(ValueError, match="speaker ids must lie in \\[0, 1\\]"):
        model(torch.zeros(1, 1, 512), speaker=torch.tensor([2]))
    with pytest.raises(ValueError, match="no speakers"):
        VQVAEModel(audio_config(speakers=None))(torch.zeros(1, 1, 512), speaker=0)
    with pytest.raises(ValueError, match="level 0 .* LongTensor \\(1, 4\\)"):
        VQVAEModel(audio_config(num_levels=2)).decode([torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long)], speaker=0)
    with pytest.raises(ValueError, match="audio_decoder must be one of"):
        audio_config(audio_decoder="hifigan")
    with pytest.raises(ValueError, match="modality='audio'"):
        VQVAEConfig(speakers=["a"])
    with pytest.raises(ValueError, match="no fixed grid"):
        audio_config().code_grids


@pytest.mark.parametrize("decoder", ["conv", "wavenet"])
def test_audio_tokenizer_save_load_round_trip(tmp_path, decoder):
    torch.manual_seed(0)
    model = VQVAEModel(audio_config(audio_decoder=decoder)).eval()
    waves = (torch.randn(1, 1, 256) * 0.3).clamp(-1, 1)
    model.save_pretrained(tmp_path)
    loaded = VQVAEModel.from_pretrained(tmp_path).eval()
    assert loaded.config.speakers == ["low", "high"] and loaded.config.audio_decoder == decoder
    codes = model.encode(waves)
    assert torch.equal(loaded.encode(waves)[0], codes[0])
    sample = dict(speaker=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.decode(codes, **sample), model.decode(codes, speaker=1, generator=torch.Generator().manual_seed(0)))


def test_every_block_speaker_conditioning_reaches_each_residual_block(tmp_path):
    torch.manual_seed(0)
    every = VQVAEModel(audio_config(speaker_conditioning="every_block")).eval()
    plain = VQVAEModel(audio_config()).eval()
    blocks = [m for m in every.decoder.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 2 + 5 and all(block.condition is not None for block in blocks)  # the start's 2, one per inner stage
    codes = every.encode((torch.randn(2, 1, 512) * 0.3).clamp(-1, 1))
    speakers = torch.tensor([0, 1])
    # with its projections at zero it is the input-conditioned decoder of the same weights
    plain.load_state_dict({k: v for k, v in every.state_dict().items() if ".condition." not in k})
    projections = {k: v.clone() for k, v in every.state_dict().items() if ".condition." in k}
    with torch.no_grad():
        for block in blocks:
            block.condition.weight.zero_(), block.condition.bias.zero_()
    assert torch.equal(every.decode(codes, speaker=speakers), plain.decode(codes, speaker=speakers))
    # the speaker's input channels cut: it still reaches the output through the blocks, and only so
    every.load_state_dict(projections, strict=False)
    with torch.no_grad():
        for model in (every, plain):
            model.decoder.net[0].weight[:, every.config.code_dim :] = 0
    assert torch.equal(plain.decode(codes, speaker=speakers), plain.decode(codes, speaker=speakers.flip(0)))
    assert not torch.allclose(every.decode(codes, speaker=speakers), every.decode(codes, speaker=speakers.flip(0)))
    every.save_pretrained(tmp_path)
    reloaded = VQVAEModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.speaker_conditioning == "every_block"
    assert torch.equal(reloaded.decode(codes, speaker=speakers), every.decode(codes, speaker=speakers))
    with pytest.raises(ValueError, match="speaker_conditioning must be one of .*'film'"):
        audio_config(speaker_conditioning="film")
