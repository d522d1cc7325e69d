"""The Accelerate training loop through stage one's CLI: learning, checkpoints, exact resume (every
quantizer, stopped at an epoch boundary or mid-epoch, also by SIGKILL), 2 processes, recipes."""

import json
import math
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
from stage1_tokenizer.common.recipes import config_fields
from stage1_tokenizer.common.training import list_checkpoints
from stage1_tokenizer.train import DERIVED_FIELDS, main

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--model.hidden_channels", "16", "--model.code_dim", "8", "--model.codebook_size", "32", "--model.quantizer", "vq-ema",
    "--train_limit", "512", "--eval_limit", "128", "--batch_size", "32", "--learning_rate", "0.002",
    "--log_every", "5", "--num_examples", "4", "--num_workers", "0",
]  # fmt: skip
QUANTIZERS = ["vq", "vq-ema", "gmvq", "scq"]


def run(tmp_path, name, *flags):
    return main([*TINY, "--output_dir", str(tmp_path / name), *map(str, flags)])


def run_in_subprocess(tmp_path, name, *flags):
    """The command in a fresh process: nothing of the test process's state (threads, compiled
    kernels, RNG) can differ between the runs compared."""
    command = [sys.executable, "-m", "stage1_tokenizer.train", *TINY, "--output_dir", str(tmp_path / name), *map(str, flags)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-3000:]


def weights(path):
    return load_file(str(Path(path) / "model" / "model.safetensors"))


def test_help_lists_every_config_field_with_its_help():
    result = subprocess.run([sys.executable, "-m", "stage1_tokenizer.train", "--help"], capture_output=True, cwd=REPO, timeout=120)
    text = " ".join(result.stdout.decode().split())
    assert result.returncode == 0
    for field in config_fields(VQVAEConfig):
        if field.name in DERIVED_FIELDS:  # the speakers come from the data
            assert f"--model.{field.name}" not in text
            continue
        assert f"--model.{field.name}" in text, field.name
        assert " ".join(field.metadata["help"].split())[:40] in text, field.name
    for flag in ("--max_steps", "--dataset", "--on_bad_file", "--overwrite_output_dir"):
        assert flag in text


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
    assert metrics["mse_from_codes"] < first_eval["metrics"]["mse_from_codes"] * 1.1  # no blow-up after step 40


def assert_same_weights(a: Path, b: Path):
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path, quantizer, copy_run):
    """512 images / 32 = 16 steps per epoch: resumed at step 16 (an epoch boundary) and 12
    (mid-epoch), every quantizer (GM-VQ draws Gumbel noise from the global RNG every step) ends
    with the weights of the uninterrupted run."""
    flags = ["--model.quantizer", quantizer, "--max_steps", 24, "--save_every", 4, "--keep_checkpoints", 10, "--eval_every", 0]
    run(tmp_path, "straight", *flags)
    for stop in (16, 12):
        resumed = copy_run(tmp_path / "straight", tmp_path / f"stopped-{stop}", stop)
        run(tmp_path, resumed.name, *flags, "--resume_from_checkpoint", "latest")
        assert_same_weights(tmp_path / "straight", resumed)


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


@pytest.mark.parametrize("quantizer", ["vq-ema", "gmvq"])  # state beyond the weights: EMA statistics; the RNG
def test_sigkill_then_resume_reaches_the_same_weights(tmp_path, quantizer, copy_run):
    """A run killed with SIGKILL after its step-16 checkpoint, resumed mid-epoch (from 12), ends
    as the uninterrupted run. Every run is a process of its own, as a user's would be (every
    quantizer, and the resume from an epoch boundary, are checked in one process above)."""
    flags = ["--model.quantizer", quantizer, "--eval_every", "0", "--save_every", "4", "--keep_checkpoints", "10"]
    if quantizer == "gmvq":  # the killed run asks for 100000 steps: anneal over the 24 of the others
        flags += ["--model.quantizer_options", '{"temperature_anneal_steps": 24}']
    command = [sys.executable, "-m", "stage1_tokenizer.train", *TINY, *flags]
    run_in_subprocess(tmp_path, "straight", *flags, "--max_steps", 24)
    out = tmp_path / "killed"
    log = open(tmp_path / "killed.log", "wb")
    process = subprocess.Popen([*command, "--max_steps", "100000", "--output_dir", str(out)], cwd=REPO, stdout=log, stderr=log)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "step-0000016").is_dir() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (out / "checkpoints" / "step-0000016").is_dir(), (tmp_path / "killed.log").read_bytes()[-2000:]
    resumed = copy_run(out, tmp_path / "after-kill", 12)
    run_in_subprocess(tmp_path, resumed.name, *flags, "--max_steps", 24, "--resume_from_checkpoint", "latest")
    assert_same_weights(tmp_path / "straight", resumed)


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys, copy_run):
    flags = ["--max_steps", 6, "--save_every", 2, "--keep_checkpoints", 3, "--eval_every", 0]
    run(tmp_path, "straight", *flags)
    stopped = copy_run(tmp_path / "straight", tmp_path / "stopped", 4)
    state = stopped / "checkpoints" / "step-0000004" / "model.safetensors"  # Accelerate's copy of the weights
    state.write_bytes(state.read_bytes()[:100])  # cut short, as by a full disk
    run(tmp_path, "stopped", *flags, "--resume_from_checkpoint", "latest")
    output = capsys.readouterr()
    assert "step-0000004 could not be loaded" in output.out + output.err and "resumed from" in output.out + output.err
    assert "step-0000002" in (output.out + output.err).split("resumed from")[1]
    assert_same_weights(tmp_path / "straight", stopped)


def test_resuming_with_another_model_is_refused(tmp_path):
    run(tmp_path, "run", "--max_steps", 2, "--save_every", 2, "--eval_every", 0)
    with pytest.raises(ValueError, match=r"step-0000002 is of a model with codebook_size 32 \(this run: 16\)"):
        run(tmp_path, "run", "--max_steps", 4, "--resume_from_checkpoint", "latest", "--model.codebook_size", 16)


def test_bad_flags_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="image_size 30 is not divisible by the total stride 4.*use 28 or 32"):
        run(tmp_path, "bad", "--model.image_size", 30)
    with pytest.raises(ValueError, match="Unknown quantizer kind 'vqx'"):
        run(tmp_path, "bad", "--model.quantizer", "vqx")
    with pytest.raises(ValueError, match="--max_steps got 0"):
        run(tmp_path, "bad", "--max_steps", 0)
    with pytest.raises(FileNotFoundError, match="is not a complete checkpoint"):
        run(tmp_path, "bad", "--resume_from_checkpoint", str(tmp_path / "nowhere"))
    assert not (tmp_path / "bad" / "checkpoints").exists()


@pytest.mark.parametrize("quantizer", ["vq-ema", "scq"])  # scq: its numba kernels in each rank
def test_two_cpu_processes_end_with_identical_weights(tmp_path, quantizer):
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533"]  # fmt: skip
    result = subprocess.run(
        [*launcher, str(Path(__file__).parent / "two_rank_train.py"), *TINY, "--model.quantizer", quantizer, "--max_steps", "20",
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
    flags = ["--dataset", str(tmp_path / "images"), "--model.image_size", "32", "--eval_limit", "8", "--max_steps", "60",
             "--batch_size", "8", "--eval_every", "10", "--save_every", "10", "--keep_checkpoints", "10"]  # fmt: skip
    with pytest.raises(ValueError, match=r"broken\.png.*could not be decoded.*--on_bad_file skip"):
        run(tmp_path, "raise", *flags)
    model, metrics = run(tmp_path, "skip", *flags, "--on_bad_file", "skip")
    states = [json.loads((p / "trainer_state.json").read_text()) for p in list_checkpoints(tmp_path / "skip")]
    assert metrics["mse_from_codes"] < 0.5 * states[0]["metrics"]["mse_from_codes"]
    assert model.config.image_size == 32
    # the bad file is met where it is read (batches stay full) and counted, once per epoch
    from stage1_tokenizer.data import DataArguments, build_datasets

    train_split, _ = build_datasets(DataArguments(dataset=str(tmp_path / "images"), eval_limit=8), VQVAEConfig(image_size=32))
    trained_on = any("broken.png" in train_split.dataset.describe(row) for row in train_split.indices)
    epochs = 60 * 8 // len(train_split) + 1  # 60 steps of 8 images
    skipped = states[-1]["bad_files_skipped"]
    assert (1 <= skipped <= epochs) if trained_on else skipped == 0, (trained_on, skipped)
    assert json.loads((tmp_path / "skip" / "train_summary.json").read_text())["bad_files_skipped"] == skipped


def test_streaming_resumed_from_a_checkpoint_sees_the_same_next_batches(tmp_path, copy_run):
    """--streaming reads a dataset as it comes (here a local folder, as a Hub one would be); a run
    resumed mid-epoch from its checkpoint continues at the same position of the stream."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for label in ("dark", "light"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(20):
            level = (40 if label == "dark" else 200) + int(torch.randint(-30, 30, (1,), generator=generator))
            Image.new("L", (28, 28), color=level).save(tmp_path / "images" / label / f"{i}.png")
    flags = ["--dataset", str(tmp_path / "images"), "--streaming", "--eval_limit", "8", "--batch_size", "4",
             "--max_steps", 12, "--save_every", 3, "--keep_checkpoints", 10, "--eval_every", 0]  # fmt: skip
    run(tmp_path, "straight", *flags)  # 32 streamed images, 8 batches an epoch: 12 steps cross an epoch
    for stop in (6, 9):
        resumed = copy_run(tmp_path / "straight", tmp_path / f"stopped-{stop}", stop)
        run(tmp_path, resumed.name, *flags, "--resume_from_checkpoint", "latest")
        assert_same_weights(tmp_path / "straight", resumed)
    state = json.loads((tmp_path / "straight" / "checkpoints" / "step-0000006" / "data-rank-0.json").read_text())
    assert state["epoch"] == 0 and state["loader"]  # the stream's position travels with the checkpoint


def test_trains_on_photo_crops_in_color(tmp_path):
    model, metrics = run(tmp_path, "photos", "--dataset", "photos", "--model.in_channels", 3, "--model.image_size", 32, "--num_crops", 256,
                         "--eval_limit", 32, "--max_steps", 40, "--eval_every", 10, "--save_every", 10, "--keep_checkpoints", 10)  # fmt: skip
    first = json.loads((list_checkpoints(tmp_path / "photos")[0] / "trainer_state.json").read_text())["metrics"]
    assert model.config.in_channels == 3
    assert metrics["mse_from_codes"] < first["mse_from_codes"]


def test_yaml_recipe_with_flag_overrides(tmp_path):
    from stage1_tokenizer.train import parse_args

    model_fields, data_args, training, _ = parse_args(
        [str(REPO / "recipes" / "fashion_mnist.yaml"), "--max_steps", "7", "--model.quantizer_options", "{beta: 0.5}"]
    )
    assert model_fields["quantizer"] == "gmvq" and model_fields["codebook_size"] == 512
    assert model_fields["quantizer_options"] == {"beta": 0.5}  # a mapping, in YAML on the command line
    assert training.max_steps == 7 and training.learning_rate == 0.001
    assert data_args.dataset == "fashion_mnist"
    imagenet, *_ = parse_args([str(REPO / "recipes" / "imagenet128.yaml")])
    assert imagenet["quantizer_options"] == {"dead_code_steps": 1000}  # a nested YAML mapping in the recipe
    with pytest.raises(FileNotFoundError, match="recipes are in recipes/"):
        parse_args([str(tmp_path / "missing.yaml")])


def test_two_level_training_reports_both_levels(tmp_path):
    model, metrics = run(tmp_path, "vqvae2", "--dataset", "photos", "--model.in_channels", 3, "--model.image_size", 32, "--model.num_levels", 2,
                         "--num_crops", 128, "--eval_limit", 16, "--max_steps", 10, "--eval_every", 10, "--save_every", 10)  # fmt: skip
    assert model.config.num_levels == 2
    assert {"codebook_used_top", "codebook_used_bottom", "perplexity_top", "perplexity_bottom"} <= set(metrics)
    assert 0 < metrics["codebook_used_top"] <= 1 and 0 < metrics["codebook_used_bottom"] <= 1


@pytest.mark.parametrize("recipe, size", [("cifar10.yaml", 32), ("imagenet128.yaml", 128)])
def test_paper_recipes_run_on_stand_in_data_of_their_shape(tmp_path, recipe, size):
    """The GPU recipes, shrunk in width and steps, on a local folder of images of their size."""
    from PIL import Image

    ramp = torch.linspace(0, 1, size)
    for label, color in (("a", (1.0, 0.2, 0.2)), ("b", (0.2, 0.3, 1.0))):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(6):  # smooth pictures: a class colour under a ramp at a random angle
            angle = torch.rand(()) * math.pi
            field = (torch.cos(angle) * ramp[None, :] + torch.sin(angle) * ramp[:, None]).abs().clamp(0, 1)
            pixels = (field[..., None] * torch.tensor(color) * 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(tmp_path / "data" / label / f"{i}.png")
    model, metrics = main([str(REPO / "recipes" / recipe), "--dataset", str(tmp_path / "data"), "--model.hidden_channels", "8",
                           "--model.code_dim", "4", "--max_steps", "40", "--batch_size", "4", "--eval_limit", "2", "--num_workers", "0",
                           "--learning_rate", "0.003", "--eval_every", "2", "--save_every", "2", "--keep_checkpoints", "100",
                           "--output_dir", str(tmp_path / "run"), "--mixed_precision", "no"])  # fmt: skip  (one precision per process: Accelerate's state)
    assert model.config.image_size == size and model.config.code_grids == [(size // 4, size // 4)]
    assert model.config.codebook_size == 512
    first = json.loads((tmp_path / "run" / "checkpoints" / "step-0000002" / "trainer_state.json").read_text())["metrics"]
    assert metrics["mse_from_codes"] < 0.7 * first["mse_from_codes"], (first, metrics)  # it learns
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
    common = ["--model.quantizer", "vq", "--model.quantizer_options", "{kmeans_init: false}", "--max_steps", "5",
              "--eval_every", "0", "--save_every", "5"]  # fmt: skip
    run(tmp_path, "full", *common, "--batch_size", "32")
    run(tmp_path, "accumulated", *common, "--batch_size", "16", "--gradient_accumulation_steps", "2")
    full, accumulated = weights(tmp_path / "full"), weights(tmp_path / "accumulated")
    untouched = run(tmp_path, "zero", *common, "--batch_size", "32", "--max_steps", "1")[0].decoder.net[0].weight
    assert not torch.allclose(full["decoder.net.0.weight"], untouched)
    for name in full:
        assert torch.allclose(full[name], accumulated[name], atol=1e-5), name
