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
from stage1_tokenizer.code_dataset import CodeDataset, load_code_dataset
from stage2_prior.train import main, negative_log_likelihood

REPO = Path(__file__).resolve().parents[2]


def model_flags(**fields) -> list[str]:
    return [item for name, value in fields.items() for item in (f"--model.{name}", str(value))]


TINY_PRIOR = [*model_flags(hidden_size=32, num_layers=2, num_heads=2), "--batch_size", "32"]


@pytest.fixture(scope="module")
def fashion_codes(tmp_path_factory):
    """A real tokenizer (K=64) trained for 300 steps, and the codes of 12000 train / 2000 test images."""
    root = tmp_path_factory.mktemp("fmnist")
    tokenizer_cli.main([
        *model_flags(quantizer="vq-ema", quantizer_options="{dead_code_steps: 50}", codebook_size=64, code_dim=16, hidden_channels=32),
        "--max_steps", "300", "--learning_rate", "0.002", "--num_workers", "0",
        "--train_limit", "12000", "--eval_limit", "500", "--eval_every", "300", "--output_dir", str(root / "tok"),
    ])  # fmt: skip
    for split, limit in (("train", 12000), ("test", 2000)):
        encode_cli.main(["--tokenizer", str(root / "tok" / "model"), "--split", split, "--limit", str(limit),
                         "--num_workers", "0", "--output_dir", str(root / split)])  # fmt: skip
    return root


def prior_flags(root, out, *extra):
    return ["--tokenizer", str(root / "tok" / "model"), "--train_codes", str(root / "train"),
            "--eval_codes", str(root / "test"), "--output_dir", str(out), "--num_workers", "0", *extra]  # fmt: skip


def test_class_conditional_prior_beats_unconditional_and_log_k(fashion_codes, tmp_path):
    common = [*model_flags(hidden_size=64, num_layers=3, num_heads=4), "--max_steps", "250",
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
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29541"]  # fmt: skip
    flags = prior_flags(fashion_codes, out, "--prior", "pixelcnn", *model_flags(hidden_channels=16, num_layers=3, output_channels=16),
                        "--max_steps", "6",
                        "--eval_every", "6", "--eval_limit", "301", "--samples_per_class", "1", "--batch_size", "16")  # fmt: skip
    result = subprocess.run([*launcher, "-m", "stage2_prior.train", *flags], capture_output=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    reported = json.loads((out / "checkpoints" / "step-0000006" / "trainer_state.json").read_text())["metrics"]
    # one process scoring all 301 examples (an odd number: the shards differ in size) gives the same sums
    model = stage2_prior.PixelCNNPrior.from_pretrained(out / "model").eval()
    codes, _ = load_code_dataset(fashion_codes / "test")
    from accelerate import Accelerator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two processes ran
    try:
        alone = negative_log_likelihood(model, CodeDataset(codes, 0, True, limit=301), Accelerator(cpu=True))
    finally:
        torch.set_num_threads(threads)
    assert reported["nll_nats_per_code"] == alone["nll_nats_per_code"]


def test_resume_continues_exactly(fashion_codes, tmp_path):
    flags = ["--batch_size", "32", "--prior", "wavenet", *model_flags(residual_channels=16, skip_channels=16, num_layers=4),
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


@pytest.fixture(scope="module")
def two_level_codes(tmp_path_factory):
    """A two-level tokenizer (7x7 top, 14x14 bottom, K=32) trained for 150 steps on Fashion-MNIST,
    and the codes of 3000 train / 500 test images."""
    root = tmp_path_factory.mktemp("two_level")
    tokenizer_cli.main([
        *model_flags(quantizer="vq-ema", quantizer_options="{dead_code_steps: 30}", codebook_size=32, code_dim=8,
                     hidden_channels=16, num_levels=2, num_downsamples=1),
        "--max_steps", "150", "--learning_rate", "0.003", "--num_workers", "0", "--train_limit", "3000",
        "--eval_limit", "200", "--eval_every", "150", "--output_dir", str(root / "tok"),
    ])  # fmt: skip
    for split, limit in (("train", 3000), ("test", 500)):
        encode_cli.main(["--tokenizer", str(root / "tok" / "model"), "--split", split, "--limit", str(limit),
                         "--num_workers", "0", "--output_dir", str(root / split)])  # fmt: skip
    return root


def level_prior(root, name, level, kind, steps, *extra):
    options = model_flags(hidden_size=32, num_layers=2, num_heads=2) if kind == "transformer" else model_flags(hidden_channels=16, num_layers=3, output_channels=16, context_channels=16)
    return main(["--tokenizer", str(root / "tok" / "model"), "--train_codes", str(root / "train"), "--eval_codes", str(root / "test"),
                 "--prior", kind, *options, "--num_workers", "0", "--level", str(level), "--max_steps", str(steps),
                 "--eval_every", str(steps), "--learning_rate", "0.003", "--batch_size", "32", "--samples_per_class", "2",
                 "--output_dir", str(root / name), *extra])  # fmt: skip


def test_two_level_tokenizer_top_then_bottom_prior(two_level_codes):
    top, top_metrics = level_prior(two_level_codes, "top", 0, "transformer", 40)
    bottom, bottom_metrics = level_prior(two_level_codes, "bottom", 1, "pixelcnn", 40)
    for metrics in (top_metrics, bottom_metrics):  # both learn: far below log K = 3.47 after 40 steps
        assert metrics["nll_nats_per_code"] < 0.8 * math.log(32), metrics
    assert top.config.code_shape == [7, 7] and bottom.config.code_shape == [14, 14]
    assert bottom.config.context_shape == [7, 7]
    assert (two_level_codes / "bottom" / "samples" / "samples-step-0000040.png").is_file()  # bottom given held-out top codes
    priors = [top.eval(), bottom.eval()]
    codes = stage2_prior.sample_hierarchy(priors, 3, condition=torch.tensor([0, 1, 2]), generator=torch.Generator().manual_seed(0))
    assert [c.shape for c in codes] == [(3, 7, 7), (3, 14, 14)]
    tokenizer = VQVAEModel.from_pretrained(two_level_codes / "tok" / "model").eval()
    images = tokenizer.decode(codes)
    assert images.shape == (3, 1, 28, 28) and torch.isfinite(images).all()
    with pytest.raises(ValueError, match="top level first"):
        stage2_prior.sample_hierarchy(priors[::-1], 3, condition=torch.tensor([0, 1, 2]))


def test_the_top_codes_lower_the_bottom_priors_held_out_nll(two_level_codes):
    """The point of the hierarchy: the bottom prior, given the top codes, predicts the bottom codes
    better than the same prior, trained the same way, without them."""
    _, with_top = level_prior(two_level_codes, "with-top", 1, "pixelcnn", 120)
    ablation, without_top = level_prior(two_level_codes, "without-top", 1, "pixelcnn", 120, "--context", "false")
    assert ablation.config.context_shape is None
    assert with_top["nll_nats_per_code"] < 0.97 * without_top["nll_nats_per_code"], (with_top, without_top)


def test_fashion_mnist_prior_recipe_runs_shrunk(fashion_codes, tmp_path):
    model, metrics = main([str(REPO / "recipes" / "fashion_mnist_prior.yaml"), *prior_flags(fashion_codes, tmp_path / "run"),
                           *model_flags(hidden_channels=16, num_layers=3, output_channels=16), "--max_steps", "100", "--eval_every", "100", "--eval_limit", "256", "--samples_per_class", "1", "--learning_rate", "0.003"])  # fmt: skip
    assert isinstance(model, stage2_prior.PixelCNNPrior) and model.config.num_classes == 10
    assert metrics["nll_nats_per_code"] < 0.8 * math.log(64)  # it learns: an untrained prior is at log K


def test_imagenet_prior_recipe_runs_on_stand_in_codes_of_its_shape(tmp_path):
    """The GPU recipe (32x32 codes, K=512, 1000 classes), shrunk in width and steps, on codes of a
    128x128 tokenizer of the imagenet128 recipe's shape."""
    from stage1_tokenizer.encoding import encode_to_code_dataset

    torch.manual_seed(0)
    tokenizer = VQVAEModel(VQVAEConfig(in_channels=3, image_size=128, hidden_channels=8, code_dim=4, codebook_size=512,
                                       quantizer="vq-ema"))  # fmt: skip
    tokenizer.save_pretrained(tmp_path / "tok")
    images = [{"pixel_values": torch.rand(3, 128, 128), "label": i % 1000} for i in range(8)]
    names = {i: f"class {i}" for i in range(1000)}
    for split in ("train", "validation"):
        encode_to_code_dataset(tokenizer, images, tmp_path / split, id2label=names, batch_size=4, num_workers=0)
    model, metrics = main([str(REPO / "recipes" / "imagenet128_prior.yaml"), "--tokenizer", str(tmp_path / "tok"),
                           "--train_codes", str(tmp_path / "train"), "--eval_codes", str(tmp_path / "validation"),
                           *model_flags(hidden_channels=8, num_layers=2, output_channels=8), "--num_workers", "0", "--max_steps", "30", "--batch_size", "4", "--eval_every", "30", "--save_every", "30", "--learning_rate", "0.003",
                           "--mixed_precision", "no", "--samples_per_class", "1", "--sample_classes", "2",
                           "--output_dir", str(tmp_path / "run")])  # fmt: skip
    assert model.config.code_shape == [32, 32] and model.config.codebook_size == 512
    assert model.config.num_classes == 1000 and model.config.condition_dropout == 0.1
    assert metrics["nll_nats_per_code"] < 0.8 * math.log(512)  # it learns: an untrained prior is at log K
    assert (tmp_path / "run" / "samples" / "samples-step-0000030.png").is_file()
