"""The single-level image VQ-VAE on real data: it learns, saves, reloads and refuses bad input."""

import pytest
import torch
from transformers import AutoConfig, AutoModel

from stage1_tokenizer import VQVAEConfig, VQVAEModel
from stage1_tokenizer.data import load_fashion_mnist


def tiny_config(quantizer="vq-ema", **options):
    return VQVAEConfig(
        image_size=28, hidden_channels=32, code_dim=16, codebook_size=64, quantizer=quantizer, quantizer_options=options
    )


def train_briefly(model, train, test, steps, error):
    """k-means init on a first batch, then `steps` Adam steps; held-out MSE of `error(model, test)`
    before and after."""
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)

    def held_out_mse():
        model.eval()
        with torch.no_grad():
            value = torch.nn.functional.mse_loss(error(model, test), test).item()
        model.train()
        return value

    model(train[:256])
    before = held_out_mse()
    for _ in range(steps):
        loss = model(train[torch.randint(len(train), (32,), generator=generator)]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return before, held_out_mse()


@pytest.fixture(scope="module")
def fashion():
    train, _ = load_fashion_mnist("train")
    test, _ = load_fashion_mnist("test")
    return train[:4096], test[:512]


@pytest.mark.parametrize("quantizer", ["vq-ema", "gmvq", "scq"])
def test_training_on_fashion_mnist_cuts_held_out_mse(fashion, quantizer):
    train, test = fashion
    model = VQVAEModel(tiny_config(quantizer))
    # the eval forward pass: decode(codes) for vq-ema and gmvq; scq's convex combination
    before, after = train_briefly(model, train, test, steps=250, error=lambda m, x: m(x).reconstruction)
    assert after < 0.5 * before, (before, after)


def test_scq_codes_carry_the_image_with_the_straight_through_gradient(fashion):
    """decode(codes) is what a prior's samples give: with the default straight-through gradient
    SCQ's codes reconstruct nearly as well as its soft output, and better, from more codewords,
    than with the relaxed layer's own gradient (whose codes collapse on longer runs, README)."""
    train, test = fashion
    results = {}
    for straight_through in (True, False):
        torch.manual_seed(0)
        model = VQVAEModel(tiny_config("scq", straight_through=straight_through))
        before, after = train_briefly(model, train, test, steps=250, error=lambda m, x: m.decode(m(x).codes))
        with torch.no_grad():
            output = model.eval()(test)
        soft = torch.nn.functional.mse_loss(output.reconstruction, test).item()
        results[straight_through] = (before, after, soft, output.codes[0].unique().numel())
    (before, after, soft, used), (_, layer_after, _, layer_used) = results[True], results[False]
    assert after < 0.2 * before and after < 1.1 * soft, results
    assert after < layer_after and used > layer_used, results


def test_save_load_round_trip_is_identical(tmp_path):
    model = VQVAEModel(tiny_config("gmvq"))
    model(torch.rand(8, 1, 28, 28))  # k-means init and a training step change buffers
    model.eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert isinstance(AutoConfig.from_pretrained(tmp_path), VQVAEConfig)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, VQVAEModel)
    x = torch.rand(4, 1, 28, 28)
    original, reloaded = model(x), loaded(x)
    assert torch.equal(original.reconstruction, reloaded.reconstruction)
    assert torch.equal(original.codes[0], reloaded.codes[0])
    assert loaded.quantizer.temperature == model.quantizer.temperature


def test_compression_bits_match_the_paper():
    # ImageNet: 128x128x3x8 bits over 32x32 codes of 9 bits = 42.7x
    model = VQVAEModel(VQVAEConfig(in_channels=3, image_size=128, hidden_channels=8, code_dim=4, codebook_size=512))
    assert model.config.code_grids == [(32, 32)]
    assert model.code_bits == 32 * 32 * 9
    assert model.compression_ratio == pytest.approx(42.67, abs=0.01)


def test_bad_input_is_refused_with_the_fix():
    model = VQVAEModel(tiny_config()).eval()
    with pytest.raises(ValueError, match=r"expected images shaped \(B, 1, H, W\), got \(2, 3, 28, 28\)"):
        model(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"\(30, 30\) is not divisible by the total stride 4"):
        model(torch.rand(2, 1, 30, 30))
    with pytest.raises(ValueError, match=r"code ids must lie in \[0, 63\], got \[0, 64\]"):
        model.decode(torch.tensor([[[0, 64]]]))
    with pytest.raises(ValueError, match=r"1 level\(s\), got codes for 2 levels"):
        model.decode([torch.zeros(1, 7, 7, dtype=torch.long)] * 2)


def test_fashion_mnist_reader_checks_files(tmp_path):
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 1, 28, 28) and labels.shape == (10000,)
    assert 0.0 <= images.min() and images.max() <= 1.0 and set(labels.unique().tolist()) == set(range(10))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", root=tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") * 3 + b"\x00" * 5)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + b"\x00\x00")
    with pytest.raises(ValueError, match="truncated: header promises 8 bytes, file holds 5"):
        load_fashion_mnist("test", root=tmp_path)


def two_level_config(quantizer="vq-ema"):
    return VQVAEConfig(
        image_size=32, hidden_channels=32, code_dim=16, codebook_size=64, num_levels=2, quantizer=quantizer
    )


def test_two_level_model_shapes_bits_and_conditioning():
    model = VQVAEModel(two_level_config()).eval()
    assert model.config.code_grids == [(4, 4), (8, 8)]  # top at stride 8, bottom at stride 4
    assert model.code_bits == (16 + 64) * 6
    x = torch.rand(3, 1, 32, 32)
    out = model(x)
    assert [c.shape for c in out.codes] == [(3, 4, 4), (3, 8, 8)]
    assert torch.allclose(model.decode(out.codes), out.reconstruction, atol=1e-5)
    # the top level's decoded features condition the bottom level's encoding
    with torch.no_grad():
        model.top_quantizer.codebook.mul_(-3.0)
    assert not torch.equal(model(x).codes[1], out.codes[1])


def test_two_level_model_trains_saves_and_reloads(fashion, tmp_path):
    train, test = (torch.nn.functional.pad(t, (2, 2, 2, 2)) for t in fashion)  # 28 -> 32: stride 8 divides it
    model = VQVAEModel(two_level_config())
    before, after = train_briefly(model, train, test, steps=200, error=lambda m, x: m.decode(m.encode(x)))
    assert after < 0.5 * before, (before, after)
    model.eval().save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    codes = model.encode(test[:8])
    assert all(torch.equal(a, b) for a, b in zip(codes, loaded.encode(test[:8])))
    assert torch.equal(model.decode(codes), loaded.decode(codes))


def test_two_level_decode_refuses_wrong_grids():
    model = VQVAEModel(two_level_config()).eval()
    top, bottom = torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 8, 8, dtype=torch.long)
    assert model.decode([top, bottom]).shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match=r"level 0 \(top first\) must be a LongTensor \(2, 4, 4\), got torch.int64 \(2, 5, 4\)"):
        model.decode([torch.zeros(2, 5, 4, dtype=torch.long), bottom])
    with pytest.raises(ValueError, match="2 level"):
        model.decode(bottom)
    with pytest.raises(ValueError, match="num_levels must be 1 .* or 2 .*, got 3"):
        VQVAEConfig(num_levels=3)
    with pytest.raises(ValueError, match="image_size 28 is not divisible by the total stride 8"):
        VQVAEConfig(image_size=28, num_levels=2)
