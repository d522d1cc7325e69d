"""Stage two's training CLI on real Fashion-MNIST codes: priors learn (class-conditional beats
unconditional, both far below log K), NLL is gathered across two processes, resume is exact,
codes of another tokenizer are refused, and a two-level hierarchy samples top then bottom."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import stage2_prior
from stage1_tokenizer import VQVAEConfig, VQVAEModel
from stage1_tokenizer import encode as encode_cli
from stage1_tokenizer import train as tokenizer_cli
from stage1_tokenizer.encode import load_code_dataset
from stage2_prior.train import CodeDataset, main, negative_log_likelihood

REPO = Path(__file__).resolve().parents[1]
TINY_PRIOR = ["--prior_config", '{"hidden_size": 32, "num_layers": 2, "num_heads": 2}', "--batch_size", "32"]


@pytest.fixture(scope="module")
def fashion_codes(tmp_path_factory):
    """A real tokenizer (K=64) trained for 300 steps, and the codes of 12000 train / 2000 test images."""
    root = tmp_path_factory.mktemp("fmnist")
    tokenizer_cli.main([
        "--quantizer", "vq-ema", "--quantizer_options", '{"dead_code_steps": 50}', "--codebook_size", "64",
        "--code_dim", "16", "--hidden_channels", "32", "--max_steps", "300", "--learning_rate", "0.002",
        "--train_limit", "12000", "--eval_limit", "500", "--eval_every", "300", "--output_dir", str(root / "tok"),
    ])  # fmt: skip
    for split, limit in (("train", 12000), ("test", 2000)):
        encode_cli.main(["--tokenizer", str(root / "tok" / "model"), "--split", split, "--limit", str(limit),
                         "--output_dir", str(root / split)])  # fmt: skip
    return root


def prior_flags(root, out, *extra):
    return ["--tokenizer", str(root / "tok" / "model"), "--train_codes", str(root / "train"),
            "--eval_codes", str(root / "test"), "--output_dir", str(out), *extra]  # fmt: skip


def test_class_conditional_prior_beats_unconditional_and_log_k(fashion_codes, tmp_path):
    common = ["--prior_config", '{"hidden_size": 64, "num_layers": 3, "num_heads": 4}', "--max_steps", "250",
              "--learning_rate", "0.002", "--eval_every", "250", "--samples_per_class", "6"]  # fmt: skip
    conditional, cond_metrics = main(prior_flags(fashion_codes, tmp_path / "cond", *common))
    _, uncond_metrics = main(prior_flags(fashion_codes, tmp_path / "uncond", *common, "--conditional", "false"))
    log_k = math.log(64)
    assert cond_metrics["nll_nats_per_code"] < 0.6 * log_k
    # the label holds at most log(10) = 2.3 nats of an image's codes; conditioning recovers most of it
    assert cond_metrics["nll_nats_per_example"] < uncond_metrics["nll_nats_per_example"] - 0.5, (cond_metrics, uncond_metrics)
    bits = cond_metrics["nll_nats_per_example"] / (28 * 28 * math.log(2))
    assert cond_metrics["code_bits_per_input_dim"] == pytest.approx(bits)
    config = conditional.config
    assert config.code_shape == [7, 7] and config.codebook_size == 64 and config.num_classes == 10
    assert config.id2label[7] == "sneaker"
    _, metadata = load_code_dataset(fashion_codes / "train")
    assert config.tokenizer_fingerprint == metadata["tokenizer_fingerprint"]
    grid = Image.open(tmp_path / "cond" / "samples" / "samples-step-0000250.png")
    assert grid.height == 2 * (10 * (28 + 2) + 2)  # one row per class
    assert grid.height > Image.open(tmp_path / "uncond" / "samples" / "samples-step-0000250.png").height
    reloaded = stage2_prior.TransformerPrior.from_pretrained(tmp_path / "cond" / "model")
    assert torch.equal(reloaded.generate(2, condition=torch.tensor([7, 9]), generator=torch.Generator().manual_seed(0)),
                       conditional.generate(2, condition=torch.tensor([7, 9]), generator=torch.Generator().manual_seed(0)))  # fmt: skip


def test_two_processes_gather_the_held_out_nll(fashion_codes, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29541"]  # fmt: skip
    flags = prior_flags(fashion_codes, out, "--prior", "pixelcnn", "--prior_config",
                        '{"hidden_channels": 16, "num_layers": 3, "output_channels": 16}', "--max_steps", "6",
                        "--eval_every", "6", "--eval_limit", "301", "--samples_per_class", "1", "--batch_size", "16")  # fmt: skip
    result = subprocess.run([*launcher, "-m", "stage2_prior.train", *flags], capture_output=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    reported = json.loads((out / "checkpoints" / "step-0000006" / "trainer_state.json").read_text())["metrics"]
    # one process scoring all 301 examples (an odd number: the shards differ in size) agrees
    model = stage2_prior.PixelCNNPrior.from_pretrained(out / "model").eval()
    codes, _ = load_code_dataset(fashion_codes / "test")
    from accelerate import Accelerator

    alone = negative_log_likelihood(model, CodeDataset(codes, 0, True, limit=301), Accelerator(cpu=True))
    assert reported["nll_nats_per_code"] == pytest.approx(alone["nll_nats_per_code"], rel=1e-5)


def test_resume_continues_exactly(fashion_codes, tmp_path):
    flags = [*TINY_PRIOR, "--prior", "wavenet", "--prior_config", '{"residual_channels": 16, "skip_channels": 16, "num_layers": 4}',
             "--save_every", "3", "--eval_every", "0", "--samples_per_class", "0"]  # fmt: skip
    main(prior_flags(fashion_codes, tmp_path / "straight", *flags, "--max_steps", "6"))
    main(prior_flags(fashion_codes, tmp_path / "resumed", *flags, "--max_steps", "3"))
    main(prior_flags(fashion_codes, tmp_path / "resumed", *flags, "--max_steps", "6", "--resume_from_checkpoint", "latest"))
    straight = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_codes_of_another_tokenizer_and_bad_flags_are_refused(fashion_codes, tmp_path):
    other = VQVAEModel(VQVAEConfig(hidden_channels=32, code_dim=16, codebook_size=64, quantizer="vq-ema"))
    other.save_pretrained(tmp_path / "other")
    flags = prior_flags(fashion_codes, tmp_path / "run", "--max_steps", "2")
    flags[1] = str(tmp_path / "other")
    with pytest.raises(ValueError, match="re-encode the data with this tokenizer"):
        main(flags)
    with pytest.raises(ValueError, match="--level 1 does not exist: the tokenizer has 1 level"):
        main(prior_flags(fashion_codes, tmp_path / "run", "--level", "1"))
    with pytest.raises(ValueError, match="--prior 'gpt' is unknown"):
        main(prior_flags(fashion_codes, tmp_path / "run", "--prior", "gpt"))
    assert not (tmp_path / "run").exists()


def test_two_level_tokenizer_top_then_bottom_prior(tmp_path):
    torch.manual_seed(0)
    tokenizer = VQVAEModel(VQVAEConfig(hidden_channels=16, code_dim=8, codebook_size=32, num_levels=2, image_size=28,
                                       num_downsamples=1, quantizer="vq-ema"))  # fmt: skip
    tokenizer.save_pretrained(tmp_path / "tok")
    for split in ("train", "test"):
        encode_cli.main(["--tokenizer", str(tmp_path / "tok"), "--split", split, "--limit", "64",
                         "--output_dir", str(tmp_path / split)])  # fmt: skip
    priors = []
    for level, kind in ((0, "transformer"), (1, "pixelcnn")):
        options = '{"hidden_size": 16, "num_layers": 1, "num_heads": 2}' if kind == "transformer" else '{"hidden_channels": 8, "num_layers": 2, "output_channels": 8}'
        model, metrics = main(["--tokenizer", str(tmp_path / "tok"), "--train_codes", str(tmp_path / "train"),
                               "--eval_codes", str(tmp_path / "test"), "--prior", kind, "--prior_config", options,
                               "--level", str(level), "--max_steps", "2", "--batch_size", "8", "--samples_per_class", "2",
                               "--output_dir", str(tmp_path / f"level{level}")])  # fmt: skip
        priors.append(model.eval())
        assert metrics["nll_nats_per_code"] > 0
    top, bottom = priors
    assert top.config.code_shape == [7, 7] and bottom.config.code_shape == [14, 14]
    assert bottom.config.context_shape == [7, 7]
    assert (tmp_path / "level1" / "samples" / "samples-step-0000002.png").is_file()  # bottom given held-out top codes
    codes = stage2_prior.sample_hierarchy(priors, 3, condition=torch.tensor([0, 1, 2]), generator=torch.Generator().manual_seed(0))
    assert [c.shape for c in codes] == [(3, 7, 7), (3, 14, 14)]
    images = tokenizer.eval().decode(codes)
    assert images.shape == (3, 1, 28, 28) and torch.isfinite(images).all()
    with pytest.raises(ValueError, match="top level first"):
        stage2_prior.sample_hierarchy(priors[::-1], 3, condition=torch.tensor([0, 1, 2]))


def test_fashion_mnist_prior_recipe_runs_shrunk(fashion_codes, tmp_path):
    model, metrics = main([str(REPO / "recipes" / "fashion_mnist_prior.yaml"), *prior_flags(fashion_codes, tmp_path / "run"),
                           "--prior_config", '{"hidden_channels": 16, "num_layers": 3, "output_channels": 16}',
                           "--max_steps", "3", "--eval_every", "3", "--eval_limit", "64", "--samples_per_class", "1"])  # fmt: skip
    assert isinstance(model, stage2_prior.PixelCNNPrior) and model.config.num_classes == 10
    assert metrics["nll_nats_per_code"] > 0


def test_imagenet_prior_recipe_runs_on_stand_in_codes_of_its_shape(tmp_path):
    """The GPU recipe (32x32 codes, K=512, 1000 classes), shrunk in width and steps, on codes of a
    128x128 tokenizer of the imagenet128 recipe's shape."""
    from stage1_tokenizer.encode import encode_dataset, save_code_dataset

    torch.manual_seed(0)
    tokenizer = VQVAEModel(VQVAEConfig(in_channels=3, image_size=128, hidden_channels=8, code_dim=4, codebook_size=512,
                                       quantizer="vq-ema"))  # fmt: skip
    tokenizer.save_pretrained(tmp_path / "tok")
    images = [{"pixel_values": torch.rand(3, 128, 128), "label": i % 1000} for i in range(8)]
    names = {i: f"class {i}" for i in range(1000)}
    for split in ("train", "validation"):
        save_code_dataset(encode_dataset(tokenizer, images, batch_size=4), tokenizer, tmp_path / split, names)
    model, metrics = main([str(REPO / "recipes" / "imagenet128_prior.yaml"), "--tokenizer", str(tmp_path / "tok"),
                           "--train_codes", str(tmp_path / "train"), "--eval_codes", str(tmp_path / "validation"),
                           "--prior_config", '{"hidden_channels": 8, "num_layers": 2, "output_channels": 8}',
                           "--max_steps", "2", "--batch_size", "4", "--eval_every", "2", "--save_every", "2",
                           "--mixed_precision", "no", "--samples_per_class", "1", "--sample_classes", "2",
                           "--output_dir", str(tmp_path / "run")])  # fmt: skip
    assert model.config.code_shape == [32, 32] and model.config.codebook_size == 512
    assert model.config.num_classes == 1000 and model.config.condition_dropout == 0.1
    assert metrics["nll_nats_per_code"] > 0
    assert (tmp_path / "run" / "samples" / "samples-step-0000002.png").is_file()
