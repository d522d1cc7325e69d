"""Bad input to stage two, as a new user would give it: every case is refused with the right error
type, a message that names the value, and nothing written or deleted in the working folder."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from stage1_tokenizer import VQVAEConfig, VQVAEModel
from stage1_tokenizer import encode as encode_cli
from stage2_prior import PixelCNNConfig, TransformerConfig, TransformerPrior, VQGenerator, write_bundle
from stage2_prior import generator as generator_cli
from stage2_prior import train as prior_cli


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """An untrained tokenizer, its codes (64 test images) and a prior of its codes, outside the sandbox."""
    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    tokenizer = VQVAEModel(VQVAEConfig(hidden_channels=8, code_dim=4, codebook_size=16, quantizer="vq")).eval()
    tokenizer.save_pretrained(root / "tokenizer")
    encode_cli.main(["--tokenizer", str(root / "tokenizer"), "--split", "test", "--limit", "64", "--output_dir", str(root / "codes")])
    torch.manual_seed(1)
    other = VQVAEModel(VQVAEConfig(hidden_channels=8, code_dim=4, codebook_size=16, quantizer="vq"))
    other.save_pretrained(root / "other-tokenizer")
    from stage1_tokenizer.code_dataset import tokenizer_fingerprint

    prior = TransformerPrior(TransformerConfig(codebook_size=16, code_shape=[7, 7], num_classes=10, hidden_size=8, num_layers=1,
                                               num_heads=2, tokenizer_fingerprint=tokenizer_fingerprint(tokenizer)))  # fmt: skip
    prior.save_pretrained(root / "prior")
    return root


def prior_run(*flags, tokenizer="tokenizer"):
    def run(parts, root):
        return prior_cli.main(["--tokenizer", str(parts / tokenizer), "--train_codes", str(parts / "codes"),
                               "--output_dir", str(root / "run"), "--max_steps", "1", *flags])  # fmt: skip

    return run


def prior_model():
    return TransformerPrior(TransformerConfig(codebook_size=16, code_shape=[4, 5], num_classes=3, hidden_size=8, num_layers=1, num_heads=2))


def corrupted_bundle(kind):
    """A bundle folder (outside the sandbox) with a tensor dropped, reshaped, or its file cut short."""

    def run(parts, root):
        folder = parts / f"bundle-{kind}"
        if not folder.exists():
            write_bundle(parts / "tokenizer", [parts / "prior"], folder)
            weights = load_file(str(folder / "model.safetensors"))
            name = sorted(weights)[0]
            if kind == "missing":
                del weights[name]
            if kind == "shape":
                weights[name] = torch.zeros(3, 3)
            save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
            if kind == "truncated":
                data = (folder / "model.safetensors").read_bytes()
                (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
        return VQGenerator.from_pretrained(folder)

    return run


GOOD = {"condition": torch.tensor([0, 1])}
CASES = [
    ("train: a typo in a model field", prior_run("--model.hidden_sise", "64"), ValueError, r"'--model.hidden_sise'.*--model.hidden_size"),
    ("train: an unknown prior", prior_run("--prior", "gpt"), ValueError, r"--prior 'gpt' is unknown"),
    ("train: a field of another prior", prior_run("--prior", "pixelcnn", "--model.num_heads", "2"), ValueError, r"'--model.num_heads'"),
    ("train: heads that do not divide the width", prior_run("--model.hidden_size", "30", "--model.num_heads", "4"), ValueError,
     r"hidden_size 30 must be divisible by num_heads 4"),
    ("train: an even PixelCNN kernel", prior_run("--prior", "pixelcnn", "--model.kernel_size", "4"), ValueError, r"kernel_size .* got 4"),
    ("train: condition dropout of 1.5", prior_run("--model.condition_dropout", "1.5"), ValueError, r"condition_dropout in \[0, 1\).* 1\.5"),
    ("train: a level the tokenizer lacks", prior_run("--level", "1"), ValueError, r"--level 1 does not exist"),
    ("train: codes of another tokenizer", prior_run(tokenizer="other-tokenizer"), ValueError, r"re-encode the data with this tokenizer"),
    ("train: a tokenizer path with a typo", prior_run(tokenizer="tokenizr"), FileNotFoundError, r"tokenizr' is no file or folder here"),
    ("train: a bundle folder holding a user's files", lambda parts, root: prior_run("--bundle_dir", str(root / "user"))(parts, root),
     FileExistsError, r"user already holds files"),
    ("train: codes that are no code dataset", lambda parts, root: prior_cli.main(["--tokenizer", str(parts / "tokenizer"),
     "--train_codes", str(root / "user"), "--output_dir", str(root / "run")]), FileNotFoundError, r"user is not a code dataset"),
    ("bundle: into a user's folder", lambda parts, root: generator_cli.main(["--tokenizer", str(parts / "tokenizer"), "--priors",
     str(parts / "prior"), "--output_dir", str(root / "user")]), FileExistsError, r"user already holds files"),
    ("bundle: a missing tensor", corrupted_bundle("missing"), ValueError, r"bundle-missing/model\.safetensors .*missing tensors \["),
    ("bundle: a tensor of the wrong shape", corrupted_bundle("shape"), ValueError, r"wrong shape .*\(3, 3\)"),
    ("bundle: a truncated file", corrupted_bundle("truncated"), ValueError, r"bundle-truncated/model\.safetensors is not a complete safetensors file"),
    ("generate: temperature 0", lambda parts, root: prior_model().generate(2, **GOOD, temperature=0), ValueError, r"temperature .* got 0"),
    ("generate: temperature NaN", lambda parts, root: prior_model().generate(2, **GOOD, temperature=math.nan), ValueError, r"got nan"),
    ("generate: temperature so small the logits overflow", lambda parts, root: prior_model().generate(2, **GOOD, temperature=1e-40),
     ValueError, r"temperature 1e-40 is too small"),
    ("generate: top_k 0", lambda parts, root: prior_model().generate(2, **GOOD, top_k=0), ValueError, r"top_k .* got 0"),
    ("generate: a fractional batch", lambda parts, root: prior_model().generate(2.5, **GOOD), ValueError, r"batch_size .* got 2\.5"),
    ("generate: a class out of range", lambda parts, root: prior_model().generate(2, condition=torch.tensor([0, 3])), ValueError,
     r"condition ids must lie in \[0, 2\].*got \[0, 3\]"),
    ("generate: guidance without condition dropout", lambda parts, root: prior_model().generate(2, **GOOD, guidance_scale=2.0),
     ValueError, r"condition_dropout > 0 .*condition_dropout=0\.0"),
    ("config: PixelCNN over sequences", lambda parts, root: PixelCNNConfig(code_shape=[64]), ValueError, r"got \[64\]"),
]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name, call, error, message", CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_refused_with_the_value_and_nothing_is_touched(parts, tmp_path, monkeypatch, name, call, error, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text(json.dumps({"my": "work"}))
    before = snapshot(tmp_path)
    with pytest.raises(error, match=message):
        call(parts, tmp_path)
    assert snapshot(tmp_path) == before
