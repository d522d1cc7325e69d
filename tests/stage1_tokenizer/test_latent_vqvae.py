"""The latent VQ-VAE (21x21 codes -> 3 codes): both decoders learn, the PixelCNN decoder is causal
over the input codes and passes gradients to the encoder, cached equals uncached decoding, the
bits per frame, save/load, bad inputs."""

import math

import pytest
import torch

from stage1_tokenizer import LatentVQVAEConfig, LatentVQVAEModel

K = 16


def config(decoder: str) -> LatentVQVAEConfig:
    return LatentVQVAEConfig(input_codebook_size=K, input_grid=(7, 7), codebook_size=8, code_dim=8, hidden_channels=16,
                             num_downsamples=2, decoder=decoder, pixelcnn_layers=3, pixelcnn_channels=16)  # fmt: skip


def scenes(n: int, generator: torch.Generator) -> torch.Tensor:
    """Grids made of 3 factors (one per band of rows), each of 4 values: what 3 codes can hold."""
    bands = torch.randint(0, K, (3, 4, 3, 7), generator=torch.Generator().manual_seed(1))
    factors = torch.randint(0, 4, (n, 3), generator=generator)
    return torch.cat([bands[i][factors[:, i]] for i in range(3)], dim=1)[:, :7]


@pytest.mark.parametrize("decoder", ["conv", "pixelcnn"])
def test_latent_vqvae_learns_to_rebuild_the_grid_from_three_codes(decoder):
    torch.manual_seed(0)
    model = LatentVQVAEModel(config(decoder))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    held_out = scenes(64, torch.Generator().manual_seed(9))
    with torch.no_grad():
        before = model(held_out).reconstruction_loss.item()
    for _ in range(150):
        loss = model(scenes(32, generator)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model(held_out).reconstruction_loss.item()
    assert before > math.log(K) - 0.5 and after < before - 1.0, (before, after)


def test_pixelcnn_decoder_is_causal_and_trains_the_encoder():
    torch.manual_seed(0)
    model = LatentVQVAEModel(config("pixelcnn"))
    grid = scenes(2, torch.Generator().manual_seed(0))
    # given the 3 codes' features (which see the whole grid, as an encoder does), each input code
    # is predicted from the codes before it in raster order only
    features = model._features(model._quantize(grid).quantized).detach()
    logits = model.decoder(grid, context=features).view(2, 49, K)
    for position in (0, 10, 24, 48):
        changed = grid.clone().view(2, -1)
        changed[:, position:] = (changed[:, position:] + 1) % K
        other = model.decoder(changed.view(2, 7, 7), context=features).view(2, 49, K)
        assert torch.allclose(other[:, : position + 1], logits[:, : position + 1], atol=1e-5)
        if position < 48:
            assert not torch.allclose(other[:, position + 1 :], logits[:, position + 1 :])
    model(grid).loss.backward()
    assert model.to_codes.weight.grad.abs().sum() > 0  # through the straight-through quantizer


def test_pixelcnn_decoding_cached_equals_uncached_and_save_load(tmp_path):
    torch.manual_seed(0)
    model = LatentVQVAEModel(config("pixelcnn")).eval()
    codes = model.encode(scenes(3, torch.Generator().manual_seed(0)))
    fast = model.decode(codes, generator=torch.Generator().manual_seed(4))
    slow = model.decode(codes, generator=torch.Generator().manual_seed(4), use_cache=False)
    assert fast.shape == (3, 7, 7) and torch.equal(fast, slow)
    model.save_pretrained(tmp_path)
    loaded = LatentVQVAEModel.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.decode(codes, generator=torch.Generator().manual_seed(4)), fast)
    assert LatentVQVAEModel(LatentVQVAEConfig()).bits_per_frame == 27  # the paper's 3 codes of K=512


def test_latent_vqvae_bad_inputs():
    model = LatentVQVAEModel(config("conv"))
    with pytest.raises(ValueError, match=r"LongTensor \(B, 7, 7\)"):
        model(torch.zeros(1, 6, 7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        model(torch.full((1, 7, 7), K))
    with pytest.raises(ValueError, match=r"codes must be a LongTensor \(B, 3, 1\)"):
        model.decode(torch.zeros(1, 2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="decoder must be one of"):
        LatentVQVAEConfig(decoder="transformer")
