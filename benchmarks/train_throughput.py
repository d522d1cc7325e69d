"""Training throughput of the Fashion-MNIST recipe in one and two CPU processes, and encode speed.

    python benchmarks/train_throughput.py [--steps 150]

Runs `stage1_tokenizer.train recipes/fashion_mnist.yaml` under `accelerate launch`, once with one
process and once with two (ACCELERATE_USE_CPU=1 --multi_gpu, gloo), back to back in this one run,
and reads each run's train_summary.json: images per second over the training steps (start-up,
evaluation and checkpoints excluded) and the main process's peak resident memory. Then encodes
the test split with the trained tokenizer. Each process gets the machine's cores divided by the
number of processes (OMP_NUM_THREADS), as a multi-process run on one machine should.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def train(num_processes: int, steps: int, output_dir: Path) -> dict:
    cores = os.cpu_count() or 1
    threads = str(max(1, cores // num_processes))
    # NUMBA_NUM_THREADS too: this process imported vqgen, which set it to its own thread count
    env = {**os.environ, "OMP_NUM_THREADS": threads, "NUMBA_NUM_THREADS": threads}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no", "--num_processes", str(num_processes)]  # fmt: skip
    if num_processes > 1:
        env["ACCELERATE_USE_CPU"] = "1"
        launcher += ["--multi_gpu", "--main_process_port", "29561"]
    else:
        launcher += ["--cpu"]
    command = [*launcher, "-m", "stage1_tokenizer.train", str(REPO / "recipes" / "fashion_mnist.yaml"),
               "--max_steps", str(steps), "--eval_every", "0", "--save_every", str(steps), "--output_dir", str(output_dir)]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.decode()[-3000:])
    return json.loads((output_dir / "train_summary.json").read_text())


@torch.no_grad()
def encode_speed(model_dir: Path, images: torch.Tensor, batch_size: int = 500) -> float:
    from stage1_tokenizer import VQVAEModel

    model = VQVAEModel.from_pretrained(model_dir).eval()
    model.encode(images[:batch_size])  # warm-up
    start = time.perf_counter()
    for batch in images.split(batch_size):
        model.encode(batch)
    return len(images) / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--output", type=Path, default=None, help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    from stage1_tokenizer.data import load_fashion_mnist

    with tempfile.TemporaryDirectory() as tmp:
        runs = {n: train(n, args.steps, Path(tmp) / f"p{n}") for n in (1, 2)}
        test_images, _ = load_fashion_mnist("test")
        encode = encode_speed(Path(tmp) / "p1" / "model", test_images)
    one = runs[1]["examples_per_second"]
    lines = [
        f"Command: `python benchmarks/train_throughput.py {' '.join(sys.argv[1:] if argv is None else argv)}`".rstrip(),
        "",
        f"recipes/fashion_mnist.yaml (GM-VQ, K=512, batch 64 per process), {args.steps} steps per run, {os.cpu_count()} cores",
        "",
        "| run | images / s | vs 1 process | peak RSS of the main process |",
        "|---|---|---|---|",
    ]
    for n, summary in runs.items():
        rate = summary["examples_per_second"]
        lines.append(f"| train, {n} process{'es' if n > 1 else ''} | {rate:.0f} | {rate / one:.2f}x | {summary['peak_rss_mb_main_process']:.0f} MB |")
    lines.append(f"| encode (eval, batch 500), 1 process | {encode:.0f} | {encode / one:.2f}x | |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)
    return runs, encode


if __name__ == "__main__":
    main()
