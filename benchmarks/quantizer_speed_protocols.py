"""Why two harnesses timed SCQ against VQ differently: the same scq / vq step-time ratio under
two timing protocols, each difference between them flipped alone, then under fewer threads and
under a busy core.

    python benchmarks/quantizer_speed_protocols.py [--rounds 9] [--output docs/results/quantizer_speed_protocols.md]

Protocols (N=32768 vectors, D=64, K=512; vq and scq with default options, interleaved rounds):
- ours (benchmarks/quantizer_speed.py): (N, D) input, a fresh batch every round, the backward of a
  dense decoder gradient plus the loss, gradients reset before each step, codebooks k-means-
  initialised on another batch before the timing;
- the independent harness's: (8, N/8, D) input, the same batch every round, the backward of
  `quantized.sum() + loss`, gradients accumulated, k-means on the first (warm-up) call.
Every figure is the median over rounds of scq's time over vq's in the same round.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from stage1_tokenizer.quantizers import build_quantizer

N, D, K = 32768, 64, 512
OURS = {"shape_3d": False, "same_batch": False, "sum_gradient": False, "reset_grads": True, "init_before": True}
THEIRS = {"shape_3d": True, "same_batch": True, "sum_gradient": True, "reset_grads": False, "init_before": False}
MEANING = {
    "shape_3d": "(8, N/8, D) input",
    "same_batch": "the same batch every round",
    "sum_gradient": "backward of quantized.sum() + loss",
    "reset_grads": "gradients accumulated",
    "init_before": "k-means on the first warm-up call",
}


def scq_over_vq(rounds: int, warmups: int, shape_3d, same_batch, sum_gradient, reset_grads, init_before) -> float:
    torch.manual_seed(0)
    quantizers = {kind: build_quantizer(kind, K, D).train() for kind in ("vq", "scq")}
    if init_before:
        initial = torch.randn(N, D)
        for quantizer in quantizers.values():
            quantizer(initial)
    fixed, decoder_grad = torch.randn(N, D), torch.randn(N, D) / (N * D) ** 0.5
    times = {kind: [] for kind in quantizers}
    for round_number in range(warmups + rounds):
        batch = fixed if same_batch else torch.randn(N, D)
        order = list(quantizers)[round_number % 2 :] + list(quantizers)[: round_number % 2]
        for kind in order:
            quantizer = quantizers[kind]
            if reset_grads:
                quantizer.zero_grad(set_to_none=True)
            z = (batch.view(8, N // 8, D) if shape_3d else batch).clone().requires_grad_()
            start = time.perf_counter()
            output = quantizer(z)
            if sum_gradient:
                (output.quantized.sum() + output.loss).backward()
            else:
                torch.autograd.backward((output.quantized, output.loss), (decoder_grad.view_as(output.quantized), torch.ones_like(output.loss)))
            if round_number >= warmups:
                times[kind].append(time.perf_counter() - start)
    return statistics.median(a / b for a, b in zip(times["scq"], times["vq"]))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--warmups", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    measure = lambda **protocol: scq_over_vq(args.rounds, args.warmups, **protocol)  # noqa: E731
    rows = {"ours": measure(**OURS), "the independent harness's": measure(**THEIRS)}
    for name, value in THEIRS.items():
        rows[f"ours, with {MEANING[name]}"] = measure(**{**OURS, name: value})
    torch.set_num_threads(1)
    rows["the independent harness's, 1 thread"] = measure(**THEIRS)
    torch.set_num_threads(threads)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # another process on one core
    try:
        rows[f"the independent harness's, {threads} threads, one core busy with another process"] = measure(**THEIRS)
    finally:
        busy.kill()
    lines = [
        f"Command: `python benchmarks/quantizer_speed_protocols.py {' '.join(sys.argv[1:] if argv is None else argv)}`".rstrip(),
        "",
        f"scq's step time / vq's, N={N}, D={D}, K={K}, {threads} threads unless said, median of {args.rounds} rounds after {args.warmups} warm-ups",
        "",
        "| protocol | scq / vq |",
        "|---|---|",
        *[f"| {name} | {value:.2f} |" for name, value in rows.items()],
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)
    return rows


if __name__ == "__main__":
    main()
