"""The Accelerate training loop through stage one's CLI: learning, checkpoints, resume, SIGKILL, 2 processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stage1_tokenizer import VQVAEConfig
from stage1_tokenizer.train import ModelArguments, main
from stage1_tokenizer.training import list_checkpoints

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "--hidden_channels", "16", "--code_dim", "8", "--codebook_size", "32", "--quantizer", "vq-ema",
    "--train_limit", "512", "--eval_limit", "128", "--batch_size", "32", "--learning_rate", "0.002",
    "--log_every", "5", "--num_examples", "4",
]  # fmt: skip


def run(tmp_path, name, *flags):
    return main([*TINY, "--output_dir", str(tmp_path / name), *map(str, flags)])


def weights(path):
    return load_file(str(Path(path) / "model" / "model.safetensors"))


def test_model_arguments_mirror_the_config():
    import inspect

    fields = set(inspect.signature(VQVAEConfig.__init__).parameters) - {"self", "kwargs"}
    # the speakers come from the data, which the flag speaker_conditioning turns on or off
    assert fields - {"speakers"} == set(ModelArguments.__dataclass_fields__) - {"speaker_conditioning"}


def test_training_learns_and_writes_logs_checkpoints_and_pngs(tmp_path):
    model, metrics = run(tmp_path, "run", "--max_steps", 60, "--eval_every", 30, "--save_every", 20, "--keep_checkpoints", 2)
    out = tmp_path / "run"
    states = [json.loads((p / "trainer_state.json").read_text()) for p in list_checkpoints(out)]
    assert [s["step"] for s in states] == [40, 60]  # the oldest beyond keep_checkpoints=2 removed
    first_eval = json.loads((out / "checkpoints" / "step-0000040" / "trainer_state.json").read_text())
    assert metrics["mse_from_codes"] < 0.08  # the untrained model is at about 0.1-0.2
    assert (out / "samples" / "reconstructions-step-0000030.png").exists()
    assert (out / "codebook_usage.png").exists()
    assert any((out / "logs").rglob("events.out.tfevents.*"))
    assert torch.equal(weights(out)["decoder.net.0.weight"], model.decoder.net[0].weight)
    assert first_eval["metrics"]["mse_from_codes"] > 0


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path):
    # 512 images / 32 = 16 steps per epoch: the resume point (20) is mid-epoch
    run(tmp_path, "straight", "--max_steps", 40, "--save_every", 20, "--eval_every", 0)
    run(tmp_path, "resumed", "--max_steps", 20, "--save_every", 20, "--eval_every", 0)
    run(tmp_path, "resumed", "--max_steps", 40, "--save_every", 20, "--eval_every", 0, "--resume_from_checkpoint", "latest")
    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_a_checkpoint_killed_mid_write_is_ignored(tmp_path, monkeypatch):
    run(tmp_path, "run", "--max_steps", 10, "--save_every", 10, "--eval_every", 0)
    real_replace = os.replace

    def die_before_rename(src, dst):
        if ".tmp-step-" in str(src):
            raise KeyboardInterrupt("killed while writing the checkpoint")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", die_before_rename)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "run", "--max_steps", 20, "--save_every", 10, "--eval_every", 0, "--resume_from_checkpoint", "latest")
    monkeypatch.undo()
    out = tmp_path / "run"
    assert (out / "checkpoints" / ".tmp-step-0000020").exists()  # the half-written one
    assert [p.name for p in list_checkpoints(out)] == ["step-0000010"]
    run(tmp_path, "run", "--max_steps", 20, "--save_every", 10, "--eval_every", 0, "--resume_from_checkpoint", "latest")
    assert [p.name for p in list_checkpoints(out)] == ["step-0000010", "step-0000020"]


def test_sigkill_then_resume_reaches_the_same_weights(tmp_path):
    command = [sys.executable, "-m", "stage1_tokenizer.train", *TINY, "--eval_every", "0", "--save_every", "10"]
    straight = subprocess.run([*command, "--max_steps", "30", "--output_dir", str(tmp_path / "straight")], capture_output=True, cwd=REPO)
    assert straight.returncode == 0, straight.stderr.decode()[-2000:]
    out = tmp_path / "killed"
    log = open(tmp_path / "killed.log", "wb")
    process = subprocess.Popen([*command, "--max_steps", "100000", "--output_dir", str(out)], cwd=REPO, stdout=log, stderr=log)
    deadline = time.time() + 300
    while not list_checkpoints(out) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = list_checkpoints(out)
    assert saved, (tmp_path / "killed.log").read_bytes()[-2000:]
    resumed = subprocess.run(
        [*command, "--max_steps", "30", "--output_dir", str(out), "--resume_from_checkpoint", "latest"],
        capture_output=True, cwd=REPO,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert b"resumed from" in resumed.stdout + resumed.stderr
    a, b = weights(tmp_path / "straight"), weights(out)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_bad_flags_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="--image_size 30 is not divisible by the total stride 4"):
        run(tmp_path, "bad", "--image_size", 30)
    with pytest.raises(ValueError, match="--quantizer 'vqx' is unknown"):
        run(tmp_path, "bad", "--quantizer", "vqx")
    with pytest.raises(ValueError, match="--max_steps got 0"):
        run(tmp_path, "bad", "--max_steps", 0)
    with pytest.raises(FileNotFoundError, match="is not a complete checkpoint"):
        run(tmp_path, "bad", "--resume_from_checkpoint", str(tmp_path / "nowhere"))
    assert not (tmp_path / "bad" / "checkpoints").exists()


@pytest.mark.parametrize("quantizer", ["vq-ema", "scq"])  # scq: its numba kernels in each rank
def test_two_cpu_processes_end_with_identical_weights(tmp_path, quantizer):
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533"]  # fmt: skip
    result = subprocess.run(
        [*launcher, str(REPO / "tests" / "two_rank_train.py"), *TINY, "--quantizer", quantizer, "--max_steps", "20",
         "--eval_every", "20", "--save_every", "20", "--output_dir", str(out)],
        capture_output=True, cwd=REPO, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    rank0, rank1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    # the codebooks (EMA: statistics summed over both ranks' batches) match the saved model
    saved = weights(out)
    assert json.loads((out / "model" / "config.json").read_text())["quantizer"] == quantizer
    assert torch.equal(saved["quantizer.codebook"], rank0["quantizer.codebook"])
    assert json.loads((out / "checkpoints" / "step-0000020" / "trainer_state.json").read_text())["step"] == 20


def test_trains_on_an_image_folder_with_a_bad_file_skipped(tmp_path):
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for label in ("dark", "light"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(24):
            level = (40 if label == "dark" else 200) + int(torch.randint(-30, 30, (1,), generator=generator))
            Image.new("L", (32, 32), color=level).save(tmp_path / "images" / label / f"{i}.png")
    (tmp_path / "images" / "dark" / "broken.png").write_bytes(b"not a png")
    flags = ["--dataset", str(tmp_path / "images"), "--image_size", "32", "--eval_limit", "8", "--max_steps", "60",
             "--batch_size", "8", "--eval_every", "10", "--save_every", "10", "--keep_checkpoints", "10"]  # fmt: skip
    with pytest.raises(ValueError, match="broken.png"):
        run(tmp_path, "raise", *flags)
    model, metrics = run(tmp_path, "skip", *flags, "--on_bad_image", "skip")
    first = json.loads((list_checkpoints(tmp_path / "skip")[0] / "trainer_state.json").read_text())["metrics"]
    assert metrics["mse_from_codes"] < 0.5 * first["mse_from_codes"]
    assert model.config.image_size == 32


def test_trains_on_photo_crops_in_color(tmp_path):
    model, metrics = run(tmp_path, "photos", "--dataset", "photos", "--in_channels", 3, "--image_size", 32, "--num_crops", 256,
                         "--eval_limit", 32, "--max_steps", 40, "--eval_every", 10, "--save_every", 10, "--keep_checkpoints", 10)  # fmt: skip
    first = json.loads((list_checkpoints(tmp_path / "photos")[0] / "trainer_state.json").read_text())["metrics"]
    assert model.config.in_channels == 3
    assert metrics["mse_from_codes"] < first["mse_from_codes"]


def test_yaml_recipe_with_flag_overrides(tmp_path):
    from stage1_tokenizer.train import parse_args

    model_args, data_args, training = parse_args([str(REPO / "recipes" / "fashion_mnist.yaml"), "--max_steps", "7"])
    assert model_args.quantizer == "gmvq" and model_args.codebook_size == 512
    assert training.max_steps == 7 and training.learning_rate == 0.001
    assert data_args.dataset == "fashion_mnist"
    with pytest.raises(FileNotFoundError, match="recipes ship in recipes/"):
        parse_args([str(tmp_path / "missing.yaml")])


def test_two_level_training_reports_both_levels(tmp_path):
    model, metrics = run(tmp_path, "vqvae2", "--dataset", "photos", "--in_channels", 3, "--image_size", 32, "--num_levels", 2,
                         "--num_crops", 128, "--eval_limit", 16, "--max_steps", 10, "--eval_every", 10, "--save_every", 10)  # fmt: skip
    assert model.config.num_levels == 2
    assert {"codebook_used_top", "codebook_used_bottom", "perplexity_top", "perplexity_bottom"} <= set(metrics)
    assert 0 < metrics["codebook_used_top"] <= 1 and metrics["mse_from_codes"] > 0


@pytest.mark.parametrize("recipe, size", [("cifar10.yaml", 32), ("imagenet128.yaml", 128)])
def test_paper_recipes_run_on_stand_in_data_of_their_shape(tmp_path, recipe, size):
    """The GPU recipes, shrunk in width and steps, on a local folder of images of their size."""
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(6):
            pixels = (torch.rand(size, size, 3) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "data" / label / f"{i}.png")
    model, metrics = main([str(REPO / "recipes" / recipe), "--dataset", str(tmp_path / "data"), "--hidden_channels", "8",
                           "--code_dim", "4", "--max_steps", "2", "--batch_size", "4", "--eval_limit", "2", "--num_workers", "0",
                           "--eval_every", "2", "--save_every", "2", "--output_dir", str(tmp_path / "run"),
                           "--mixed_precision", "no"])  # fmt: skip  (one precision per process: Accelerate's state)
    assert model.config.image_size == size and model.config.code_grids == [(size // 4, size // 4)]
    assert model.config.codebook_size == 512 and metrics["mse_from_codes"] > 0
    if size == 128:
        assert model.compression_ratio == pytest.approx(42.67, abs=0.01)


def test_bf16_mixed_precision_trains_on_cpu(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "stage1_tokenizer.train", *TINY, "--mixed_precision", "bf16", "--max_steps", "60",
         "--eval_every", "10", "--save_every", "10", "--keep_checkpoints", "10", "--output_dir", str(tmp_path / "bf16")],
        capture_output=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    first, last = (json.loads((p / "trainer_state.json").read_text())["metrics"] for p in list_checkpoints(tmp_path / "bf16")[::5])
    assert last["mse_from_codes"] < 0.7 * first["mse_from_codes"]


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    """Two micro-batches of 16 with accumulation = one batch of 32 (same seeded order; plain VQ
    without k-means so that nothing depends on the micro-batch split but the gradient)."""
    common = ["--quantizer", "vq", "--quantizer_options", '{"kmeans_init": false}', "--max_steps", "5",
              "--eval_every", "0", "--save_every", "5"]  # fmt: skip
    run(tmp_path, "full", *common, "--batch_size", "32")
    run(tmp_path, "accumulated", *common, "--batch_size", "16", "--gradient_accumulation_steps", "2")
    full, accumulated = weights(tmp_path / "full"), weights(tmp_path / "accumulated")
    untouched = run(tmp_path, "zero", *common, "--batch_size", "32", "--max_steps", "1")[0].decoder.net[0].weight
    assert not torch.allclose(full["decoder.net.0.weight"], untouched)
    for name in full:
        assert torch.allclose(full[name], accumulated[name], atol=1e-5), name
