"""Code datasets: what encode writes equals the tokenizer's codes, and other tokenizers are refused."""

import pytest
import torch

from stage1_tokenizer import VQVAEConfig, VQVAEModel
from stage1_tokenizer.data import FashionMNIST
from stage1_tokenizer.encode import load_code_dataset, main, tokenizer_fingerprint


def make_tokenizer(path, seed):
    torch.manual_seed(seed)
    model = VQVAEModel(VQVAEConfig(hidden_channels=16, code_dim=8, codebook_size=32, quantizer="vq-ema"))
    model(FashionMNIST("train", limit=256).images)  # k-means init: codes spread over the book
    model.eval().save_pretrained(path)
    return model


def test_encoded_codes_match_the_tokenizer_and_carry_labels(tmp_path):
    model = make_tokenizer(tmp_path / "tok", 0)
    out = main(["--tokenizer", str(tmp_path / "tok"), "--split", "test", "--limit", "40", "--batch_size", "16",
                "--output_dir", str(tmp_path / "codes")])  # fmt: skip
    codes, metadata = load_code_dataset(out, tokenizer=VQVAEModel.from_pretrained(tmp_path / "tok"))
    source = FashionMNIST("test", limit=40)
    expected = model.encode(source.images)[0]
    assert torch.equal(torch.tensor(codes["codes_0"]), expected)
    assert codes["label"] == source.labels.tolist()
    assert metadata["code_grids"] == [[7, 7]] and metadata["codebook_size"] == 32
    assert metadata["id2label"]["9"] == "ankle boot"
    assert not list(tmp_path.glob(".codes.tmp"))


def test_codes_from_another_tokenizer_are_refused(tmp_path):
    make_tokenizer(tmp_path / "tok", 0)
    other = make_tokenizer(tmp_path / "other", 1)
    main(["--tokenizer", str(tmp_path / "tok"), "--split", "test", "--limit", "8", "--output_dir", str(tmp_path / "codes")])
    with pytest.raises(ValueError, match="re-encode the data with this tokenizer"):
        load_code_dataset(tmp_path / "codes", tokenizer=other)
    with pytest.raises(FileNotFoundError, match="is not a code dataset"):
        load_code_dataset(tmp_path)


def test_fingerprint_ignores_training_counters_but_not_weights(tmp_path):
    model = make_tokenizer(tmp_path / "tok", 0)
    before = tokenizer_fingerprint(model)
    model.quantizer.steps_unused += 5
    model.quantizer.ema_count += 1.0
    assert tokenizer_fingerprint(model) == before
    with torch.no_grad():
        model.decoder.net[0].weight[0, 0, 0, 0] += 1e-3
    assert tokenizer_fingerprint(model) != before


def test_fingerprint_survives_save_and_reload(tmp_path):
    model = make_tokenizer(tmp_path / "tok", 0)
    assert tokenizer_fingerprint(VQVAEModel.from_pretrained(tmp_path / "tok")) == tokenizer_fingerprint(model)
