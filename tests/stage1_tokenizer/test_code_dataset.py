"""Code datasets: what encode writes equals the tokenizer's codes, in the smallest integer type, in
the data's order on 1 or 2 processes; an interrupted encode keeps its finished shards; memory does
not grow with the dataset; other tokenizers' codes are refused."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stage1_tokenizer import VQVAEConfig, VQVAEModel
from stage1_tokenizer.code_dataset import CodeDataset, load_code_dataset, tokenizer_fingerprint
from stage1_tokenizer.data import FashionMNIST
from stage1_tokenizer.encode import main

REPO = Path(__file__).resolve().parents[2]


def make_tokenizer(path, seed, codebook_size=32):
    torch.manual_seed(seed)
    model = VQVAEModel(VQVAEConfig(hidden_channels=16, code_dim=8, codebook_size=codebook_size, quantizer="vq-ema"))
    model(FashionMNIST("train", limit=256).images)  # k-means init: codes spread over the book
    model.eval().save_pretrained(path)
    return model


def all_codes(path, tokenizer=None):
    codes, metadata = load_code_dataset(path, tokenizer)
    table = codes.with_format("torch")[:]
    return table, metadata, codes


def test_encoded_codes_match_the_tokenizer_and_carry_labels(tmp_path):
    model = make_tokenizer(tmp_path / "tok", 0)
    out = main(["--tokenizer", str(tmp_path / "tok"), "--split", "test", "--limit", "40", "--batch_size", "16",
                "--shard_size", "15", "--output_dir", str(tmp_path / "codes")])  # fmt: skip
    table, metadata, codes = all_codes(out, VQVAEModel.from_pretrained(tmp_path / "tok"))
    source = FashionMNIST("test", limit=40)
    assert torch.equal(table["codes_0"].long(), model.encode(source.images)[0])
    assert torch.equal(table["label"], source.labels)
    assert codes.features["codes_0"].dtype == "uint8"  # K=32 fits in a byte
    assert metadata["code_grids"] == [[7, 7]] and metadata["codebook_size"] == 32 and metadata["num_examples"] == 40
    assert metadata["shards"] == [f"shards/shard-0000{i}.arrow" for i in range(3)]  # 15 + 15 + 10 rows, in order
    assert metadata["id2label"]["9"] == "ankle boot"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes", "tok"]  # no work folder left behind
    items = CodeDataset(codes, level=0, conditional=True)
    assert torch.equal(items[3]["codes"], table["codes_0"][3].long()) and int(items[3]["label"]) == int(source.labels[3])


def test_codes_use_the_smallest_integer_type():
    from stage1_tokenizer.code_dataset import code_dtype

    assert [code_dtype(k).__name__ for k in (2, 256, 257, 512, 65536, 65537)] == ["uint8", "uint8", "uint16", "uint16", "uint16", "uint32"]


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


def launch(*args, processes=1, env=None, **kwargs):
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no", "--num_processes", str(processes)]  # fmt: skip
    launcher += ["--multi_gpu", "--main_process_port", "29557"] if processes > 1 else ["--cpu"]
    environment = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", **(env or {})}
    return [*launcher, "-m", "stage1_tokenizer.encode", *map(str, args)], dict(cwd=REPO, env=environment, **kwargs)


def test_two_processes_encode_the_same_codes_in_the_same_order(tmp_path):
    make_tokenizer(tmp_path / "tok", 0, codebook_size=300)  # uint16 codes
    flags = ["--tokenizer", tmp_path / "tok", "--split", "test", "--limit", "1000", "--shard_size", "96", "--batch_size", "40"]
    for processes in (1, 2):
        command, options = launch(*flags, "--output_dir", tmp_path / f"codes-{processes}", processes=processes)
        result = subprocess.run(command, capture_output=True, timeout=600, **options)
        assert result.returncode == 0, result.stderr.decode()[-3000:]
    (one, meta_one, codes), (two, meta_two, _) = all_codes(tmp_path / "codes-1"), all_codes(tmp_path / "codes-2")
    assert codes.features["codes_0"].dtype == "uint16"
    assert torch.equal(one["codes_0"], two["codes_0"]) and torch.equal(one["label"], two["label"])
    assert torch.equal(one["label"], FashionMNIST("test", limit=1000).labels)  # the data's own order
    assert meta_one == meta_two and len(meta_one["shards"]) == 11


def test_an_encode_killed_halfway_resumes_and_keeps_its_finished_shards(tmp_path):
    make_tokenizer(tmp_path / "tok", 0)
    flags = ["-m", "stage1_tokenizer.encode", "--tokenizer", tmp_path / "tok", "--split", "train", "--limit", "12000",
             "--shard_size", "500", "--batch_size", "50", "--num_workers", "0"]  # fmt: skip
    command = [sys.executable, *map(str, flags)]
    straight = subprocess.run([*command, "--output_dir", str(tmp_path / "straight")], capture_output=True, cwd=REPO, timeout=600)
    assert straight.returncode == 0, straight.stderr.decode()[-2000:]
    work = tmp_path / ".killed.encoding" / "shards"
    process = subprocess.Popen([*command, "--output_dir", str(tmp_path / "killed")], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while len(list(work.glob("shard-*.arrow"))) < 3 and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in work.glob("shard-*.arrow")}
    assert 3 <= len(finished) < 24, finished
    resumed = subprocess.run([*command, "--output_dir", str(tmp_path / "killed")], capture_output=True, cwd=REPO, timeout=600)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    shards = tmp_path / "killed" / "shards"
    assert {name: (shards / name).stat().st_mtime_ns for name in finished} == finished  # kept, not redone
    (a, meta_a, _), (b, meta_b, _) = all_codes(tmp_path / "straight"), all_codes(tmp_path / "killed")
    assert torch.equal(a["codes_0"], b["codes_0"]) and torch.equal(a["label"], b["label"]) and meta_a == meta_b
    assert not (tmp_path / ".killed.encoding").exists()


def peak_rss_kb(tmp_path, limit: int) -> int:
    """The encode command's peak resident memory, run in its own process."""
    code = (
        "import resource, sys\nfrom stage1_tokenizer.encode import main\n"
        "main(sys.argv[1:])\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    args = ["--tokenizer", tmp_path / "tok", "--split", "train", "--limit", limit, "--shard_size", "2000", "--num_workers", "0",
            "--output_dir", tmp_path / f"codes-{limit}"]  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return int(result.stdout.decode().split()[-1])


def test_encode_memory_does_not_grow_with_the_dataset(tmp_path):
    make_tokenizer(tmp_path / "tok", 0, codebook_size=512)
    small, large = peak_rss_kb(tmp_path, 2000), peak_rss_kb(tmp_path, 20000)
    per_image_kb = (large - small) / 18000
    assert per_image_kb < 1.0, (small, large)  # the bound is 4 KB; a 7x7 code grid is 98 bytes
    assert json.loads((tmp_path / "codes-20000" / "code_dataset.json").read_text())["num_examples"] == 20000
