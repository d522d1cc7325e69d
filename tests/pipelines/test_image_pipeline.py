"""The vq-image-gen pipeline end to end, from a bundle trained here: a fresh process through
`transformers.pipeline`, same seed -> same images, class names and synonyms, save/reload, the
local default bundle, mismatched parts refused, and an upload checked at the HTTP level."""

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

import pipelines
from stage1_tokenizer import VQVAEConfig, VQVAEModel
from stage1_tokenizer import encode as encode_cli
from stage1_tokenizer import train as tokenizer_cli
from stage1_tokenizer.code_dataset import tokenizer_fingerprint
from stage2_prior import TransformerConfig, TransformerPrior, VQGenerator
from stage2_prior import train as prior_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """Tokenizer and class-conditional prior trained briefly on real Fashion-MNIST; the prior's
    training CLI writes the bundle."""
    root = tmp_path_factory.mktemp("bundle")
    tokenizer_cli.main(["--model.quantizer", "vq-ema", "--model.codebook_size", "32", "--model.code_dim", "8", "--model.hidden_channels", "16",
                        "--max_steps", "40", "--train_limit", "1024", "--eval_limit", "128", "--eval_every", "40",
                        "--output_dir", str(root / "tok")])  # fmt: skip
    for split in ("train", "test"):
        encode_cli.main(["--tokenizer", str(root / "tok" / "model"), "--split", split, "--limit", "512",
                         "--output_dir", str(root / split)])  # fmt: skip
    prior_cli.main(["--prior", "transformer", "--model.hidden_size", "32", "--model.num_layers", "2", "--model.num_heads", "2",
                    "--tokenizer", str(root / "tok" / "model"), "--train_codes", str(root / "train"),
                    "--eval_codes", str(root / "test"), "--max_steps", "30", "--batch_size", "32", "--eval_every", "30",
                    "--samples_per_class", "0", "--output_dir", str(root / "prior"), "--bundle_dir", str(root / "bundle")])  # fmt: skip
    return root / "bundle"


def generate_in_fresh_process(bundle: Path, env=None) -> np.ndarray:
    code = (
        "import sys, numpy as np, pipelines, transformers\n"
        f"generate = transformers.pipeline('vq-image-gen'{', model=sys.argv[1]' if bundle else ''})\n"
        "images = generate(['sneaker', 'Ankle  Boot'], num_images=2, seed=3)\n"
        "np.save(sys.argv[2], np.stack([np.asarray(im) for im in images]))\n"
    )
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "images.npy"
        result = subprocess.run([sys.executable, "-c", code, str(bundle), str(out)], capture_output=True, cwd=REPO,
                                env={**os.environ, **(env or {})}, timeout=300)  # fmt: skip
        assert result.returncode == 0, result.stderr.decode()[-3000:]
        return np.load(out)


def test_fresh_process_through_transformers_pipeline_is_reproducible(bundle):
    first = generate_in_fresh_process(bundle)
    second = generate_in_fresh_process(bundle)
    assert first.shape == (4, 28, 28) and first.dtype == np.uint8
    assert np.array_equal(first, second)
    here = transformers.pipeline("vq-image-gen", model=str(bundle))
    images = here(["sneaker", 9], num_images=2, seed=3)
    assert np.array_equal(np.stack([np.asarray(im) for im in images]), first)
    assert not np.array_equal(first[0], first[1])  # two different samples of one class


def test_outputs_names_ids_and_options(bundle):
    generate = pipelines.pipeline(model=bundle)
    single = generate("sneaker", seed=0)
    assert single.size == (28, 28) and single.mode == "L"
    assert np.array_equal(np.asarray(single), np.asarray(generate(7, seed=0)))  # "sneaker" is class 7
    assert np.array_equal(np.asarray(single), np.asarray(generate("  SNEAKER ", seed=0)))
    assert np.array_equal(np.asarray(generate("t-shirt/top", seed=1)), np.asarray(generate("T Shirt/Top", seed=1)))
    tensor = generate(["sneaker", "bag"], num_images=3, seed=0, output_type="pt", batch_size=4)
    assert tensor.shape == (6, 1, 28, 28) and 0 <= tensor.min() and tensor.max() <= 1
    greedy = generate("bag", top_k=1, output_type="pt")
    assert torch.equal(greedy, generate("bag", top_k=1, output_type="pt", use_cache=False))
    with pytest.raises(ValueError, match=r"unknown class name 'sneakr boot': the closest known labels: 'sneaker'"):
        generate("sneakr boot")
    with pytest.raises(ValueError, match="class id 10 is not one of this model's 10 classes"):
        generate(10)


def test_save_and_reload_give_identical_images_and_a_model_card(bundle, tmp_path):
    generate = transformers.pipeline("vq-image-gen", model=str(bundle))
    generate.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    reloaded = transformers.pipeline("vq-image-gen", model=str(tmp_path / "saved"))
    a = generate(["dress", "bag"], num_images=2, seed=5, output_type="pt")
    assert torch.equal(a, reloaded(["dress", "bag"], num_images=2, seed=5, output_type="pt"))
    card = ModelCard.load(tmp_path / "saved" / "README.md")
    assert card.data.library_name == "vqgen"
    assert 'transformers.pipeline("vq-image-gen"' in card.text and "nats per code" in card.text


def test_default_bundle_from_the_environment_and_a_clear_error_without_one(bundle, tmp_path, monkeypatch):
    images = generate_in_fresh_process(None, env={"VQGEN_BUNDLE": str(bundle)})  # transformers.pipeline(task) alone
    assert images.shape == (4, 28, 28)
    monkeypatch.setitem(pipelines.DEFAULT_BUNDLES, "vq-image-gen", ("VQGEN_BUNDLE", tmp_path / "no-demo-yet", "bash scripts/demo.sh"))
    monkeypatch.delenv("VQGEN_BUNDLE", raising=False)
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="run `bash scripts/demo.sh`"):
        transformers.pipeline("vq-image-gen")
    with pytest.raises(FileNotFoundError, match="run `bash scripts/demo.sh`"):
        pipelines.pipeline()
    with pytest.raises(FileNotFoundError, match="neither a bundle folder on this machine nor a Hub repo id"):
        pipelines.pipeline(model="outputs/missing/bundle")
    monkeypatch.setenv("VQGEN_BUNDLE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="is not a bundle folder"):
        pipelines.pipeline()
    assert time.perf_counter() - started < 5  # no network attempt


def test_imagenet_names_and_synonyms_resolve_offline():
    labels = pipelines.imagenet_1k_id2label()
    resolve = pipelines.LabelResolver(labels, "imagenet-1k")
    assert len(labels) == 1000 and labels[300] == "tiger beetle" and labels[0] == "tench"
    assert resolve("tiger beetle") == 300 and resolve("Tiger_Beetle") == 300
    assert resolve("tench") == 0 and resolve("Tinca tinca") == 0
    assert resolve("great white shark") == resolve("man-eater") == resolve("Carcharodon carcharias") == 2
    assert resolve(300) == 300
    with pytest.raises(ValueError, match="closest known labels: 'tiger beetle'"):
        resolve("tiger beatle")


def test_imagenet_bundle_takes_class_names(tmp_path):
    torch.manual_seed(0)
    tokenizer = VQVAEModel(VQVAEConfig(hidden_channels=8, code_dim=4, codebook_size=16, quantizer="vq")).eval()
    prior = TransformerPrior(TransformerConfig(codebook_size=16, code_shape=(7, 7), num_classes=1000, hidden_size=16,
                                               num_layers=1, num_heads=2, tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
                                               id2label=pipelines.imagenet_1k_id2label()))  # fmt: skip
    VQGenerator.from_parts(tokenizer, [prior], label_set="imagenet-1k").save_pretrained(tmp_path)
    generate = transformers.pipeline("vq-image-gen", model=str(tmp_path))
    by_name = generate("tiger beetle", seed=0, output_type="pt")
    assert torch.equal(by_name, generate(300, seed=0, output_type="pt"))
    assert generate.class_ids(["tiger beetle", "Tench", "man-eater", 999]) == [300, 0, 2, 999]


def test_mismatched_parts_are_refused_at_load(bundle, tmp_path):
    config = json.loads((bundle / "config.json").read_text())
    weights = load_file(str(bundle / "model.safetensors"))
    # a prior whose grid differs from the tokenizer's
    broken = json.loads(json.dumps(config))
    broken["prior_configs"][0]["code_shape"] = [8, 8]
    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "config.json").write_text(json.dumps(broken))
    save_file(weights, str(tmp_path / "grid" / "model.safetensors"))
    with pytest.raises(ValueError, match=r"code grid \[8, 8\] \(the tokenizer's level 0: \[7, 7\]\)"):
        transformers.pipeline("vq-image-gen", model=str(tmp_path / "grid"))
    # the same prior paired with another tokenizer's weights: its codes do not fit
    weights = {k: (v + 0.01 if k.startswith("tokenizer.decoder") and v.is_floating_point() else v) for k, v in weights.items()}
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "config.json").write_text(json.dumps(config))
    save_file(weights, str(tmp_path / "tok" / "model.safetensors"))
    with pytest.raises(ValueError, match="codes of tokenizer .* not of this tokenizer"):
        VQGenerator.from_pretrained(tmp_path / "tok")


def test_push_to_hub_sends_the_bundle_and_its_card(bundle, fake_hub, capsys):
    url = pipelines.push_to_hub(bundle, "me/vqgen-fmnist", token="hf_secret_token_123")
    assert url.endswith("a" * 40)
    hub_calls = [c for c in fake_hub if not c["path"].endswith("agent-harnesses")]
    assert hub_calls[0]["path"] == "/api/repos/create" and hub_calls[0]["body"]["name"] == "vqgen-fmnist"
    commit = hub_calls[-1]
    assert commit["path"] == "/api/models/me/vqgen-fmnist/commit/main"
    assert all(c["authorization"] == "Bearer hf_secret_token_123" for c in hub_calls)
    files = {op["value"]["path"]: base64.b64decode(op["value"]["content"]) for op in commit["body"][1:] if op["key"] == "file"}
    assert sorted(files) == ["README.md", "config.json", "model.safetensors", "samples.png"]  # + the card's picture
    assert files["model.safetensors"] == (bundle / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert 'generate = transformers.pipeline("vq-image-gen", model="me/vqgen-fmnist")' in card
    assert "held-out reconstruction MSE" in card and "held-out NLL (nats per code)" in card
    assert "fashion_mnist" in card and "`sneaker`" in card
    printed = capsys.readouterr()
    assert "hf_secret_token_123" not in printed.out + printed.err
