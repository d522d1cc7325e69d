"""Quantizer speed: what one training step pays for each quantizer (forward + backward), as ratios
measured side by side, against vector-quantize-pytorch and a bare floor.

    python benchmarks/quantizer_speed.py [--vectors 32768] [--dim 64] [--codebook-size 512]
                                         [--repeats 15] [--warmups 2] [--runs 1] [--seed 0]
                                         [--output docs/results/quantizer_speed.md]

What is timed, per candidate and round (a training step's quantizer share):
- a fresh batch of `--vectors` Gaussian vectors of `--dim` (drawn before the timing; each candidate
  gets its own copy, requiring grad as an encoder output does);
- the forward pass, then one backward pass of the decoder's gradient (a fixed dense tensor, fed
  in at `quantized` as a decoder would) plus the quantizer's own loss;
- the codebook's gradient is reset to None before each step (outside the timing), as
  `optimizer.zero_grad()` does; no optimiser step.
Before the timed rounds: every codebook is k-means-initialised on one training batch (not one of
the timed batches), and `--warmups` untimed rounds run (numba compiles or loads SCQ's kernels).
All candidates run interleaved in one process, `--repeats` rounds, the order rotating every
round, so the machine's noise and each candidate's effect on the caches fall on all alike. Each
ratio is the median over rounds of the two candidates' times in the same round; "middle half"
gives the 25th-75th percentiles of the ratio to vq, a measure of the noise. "CPU time / vq" is
the same ratio for the process's CPU time (all its threads): the work done, much less sensitive
than wall time to other processes on a shared machine, but blind to how well each candidate
uses the threads. No bare times.

Rows:
- floor: one distance matmul, argmin, gather, straight-through; no loss, no codebook update.
- vector-quantize-pytorch: `VectorQuantize` with EMA (decay 0.99), rotation trick and k-means off.
- vq, vq-ema, gmvq, scq: `build_quantizer(kind, K, D)` with default options; scq's defaults are
  ours (line search, straight-through encoder gradient), with numba kernels on CPU.
- scq, paper layer: scq with `line_search=False, straight_through=False`: the paper's output C W
  and the gradient through the layer.
- scq, portable torch path: scq with `cpu_kernels=False`, the torch ops it runs on other devices.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from stage1_tokenizer.quantizers import build_quantizer

REFERENCE = "vector-quantize-pytorch (EMA)"
SCQ_PAPER = "scq, paper layer (line_search=False, straight_through=False)"
SCQ_TORCH = "scq, portable torch path"  # what scq runs on other devices; on CPU it runs numba kernels


class Floor(torch.nn.Module):
    def __init__(self, codebook_size, dim):
        super().__init__()
        self.codebook = torch.nn.Parameter(torch.randn(codebook_size, dim))

    def forward(self, z):
        with torch.no_grad():
            scores = torch.addmm((self.codebook * self.codebook).sum(1), z, self.codebook.t(), alpha=-2.0)
            codes = scores.argmin(1)
        chosen = self.codebook[codes]
        return z + (chosen - z).detach(), chosen.sum() * 0  # (quantized, loss)


def make_candidates(args, training_batch):
    candidates = {"floor": Floor(args.codebook_size, args.dim)}
    try:
        from vector_quantize_pytorch import VectorQuantize

        candidates[REFERENCE] = VectorQuantize(
            dim=args.dim, codebook_size=args.codebook_size, decay=0.99, commitment_weight=0.25,
            kmeans_init=False, rotation_trick=False,
        )  # fmt: skip
    except ImportError:
        print("vector-quantize-pytorch is not installed (pip install -e '.[dev]'): skipping it")
    ours = {kind: build_quantizer(kind, args.codebook_size, args.dim) for kind in ("vq", "vq-ema", "gmvq", "scq")}
    ours[SCQ_PAPER] = build_quantizer("scq", args.codebook_size, args.dim, line_search=False, straight_through=False)
    ours[SCQ_TORCH] = build_quantizer("scq", args.codebook_size, args.dim, cpu_kernels=False)
    candidates.update(ours)
    for name, module in candidates.items():
        module.train()
        if name in ours:
            module(training_batch)  # k-means init on a training batch, as on a run's first step
            codebook = module.codebook.detach()
    # the floor and the reference start from the same k-means codebook as ours
    with torch.no_grad():
        candidates["floor"].codebook.copy_(codebook)
        if REFERENCE in candidates:
            reference = candidates[REFERENCE]._codebook
            reference.embed.copy_(codebook[None])
            reference.embed_avg.copy_(codebook[None])
            reference.initted.fill_(True)
    return candidates


def step(name, module, batch, decoder_grad):
    """One timed training step's quantizer share: forward, then backward of the decoder's
    gradient at `quantized` plus the quantizer's loss."""
    z = batch.clone().requires_grad_()  # an encoder output
    if name == REFERENCE:
        quantized, _, loss = module(z[None])
        quantized = quantized[0]
    elif name == "floor":
        quantized, loss = module(z)
    else:
        output = module(z)
        quantized, loss = output.quantized, output.loss
    torch.autograd.backward((quantized, loss), (decoder_grad, torch.ones_like(loss)))


def quartiles(values):
    low, _, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, high


def measure(args) -> tuple[dict, dict]:
    """One run: (wall times, CPU times) per candidate, one entry per timed round."""
    torch.manual_seed(args.seed)
    candidates = make_candidates(args, torch.randn(args.vectors, args.dim))
    decoder_grad = torch.randn(args.vectors, args.dim) / (args.vectors * args.dim) ** 0.5
    names = list(candidates)
    times, cpu_times = {name: [] for name in names}, {name: [] for name in names}
    for round_number in range(args.warmups + args.repeats):
        batch = torch.randn(args.vectors, args.dim)  # a fresh batch every round
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            module = candidates[name]
            module.zero_grad(set_to_none=True)
            start, cpu_start = time.perf_counter(), time.process_time()
            step(name, module, batch, decoder_grad)
            elapsed, cpu_elapsed = time.perf_counter() - start, time.process_time() - cpu_start
            if round_number >= args.warmups:
                times[name].append(elapsed)
                cpu_times[name].append(cpu_elapsed)
    return times, cpu_times


def ratio(times, name, baseline) -> float:
    """The median over rounds of the two candidates' times in the same round."""
    return statistics.median(a / b for a, b in zip(times[name], times[baseline]))


def run_table(times, cpu_times) -> list[str]:
    lines = [
        "| quantizer | time / floor | time / vq | time / vq, middle half of rounds | CPU time / vq "
        "| time / vector-quantize-pytorch |",
        "|---|---|---|---|---|---|",
    ]
    for name in times:
        low, high = quartiles([a / b for a, b in zip(times[name], times["vq"])])
        versus_reference = f"{ratio(times, name, REFERENCE):.2f}" if REFERENCE in times else "n/a"
        lines.append(
            f"| {name} | {ratio(times, name, 'floor'):.2f} | {ratio(times, name, 'vq'):.2f} | {low:.2f}-{high:.2f} "
            f"| {ratio(cpu_times, name, 'vq'):.2f} | {versus_reference} |"
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=32768, help="encoder outputs per batch (N)")
    parser.add_argument("--dim", type=int, default=64, help="code dimension (D)")
    parser.add_argument("--codebook-size", type=int, default=512, help="codewords (K)")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (each candidate once per round)")
    parser.add_argument("--warmups", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--runs", type=int, default=1, help="independent runs (fresh candidates each); the summary gives the range")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="also write the tables (markdown) here")
    args = parser.parse_args(argv)
    if args.repeats < 2 or args.warmups < 1 or args.runs < 1:
        parser.error(f"--repeats must be >= 2, --warmups >= 1 and --runs >= 1, got {args.repeats}, {args.warmups}, {args.runs}.")
    lines = [
        f"Command: `python benchmarks/quantizer_speed.py {' '.join(sys.argv[1:] if argv is None else argv)}`".rstrip(),
        "",
        f"forward+backward of a training step, {args.vectors} fresh vectors x dim {args.dim}, K={args.codebook_size}, "
        f"{torch.get_num_threads()} threads (the numba kernels follow torch's count), "
        f"medians over {args.repeats} interleaved rounds after {args.warmups} warm-up rounds",
    ]
    per_run = []
    for run in range(args.runs):
        times, cpu_times = measure(args)
        per_run.append({name: ratio(times, name, "vq") for name in times})
        lines += ["", f"Run {run + 1} of {args.runs}:", "", *run_table(times, cpu_times)]
    if args.runs > 1:
        lines += ["", f"time / vq over the {args.runs} runs (each a median over rounds):", "",
                  "| quantizer | lowest | median | highest |", "|---|---|---|---|"]  # fmt: skip
        for name in per_run[0]:
            values = [run[name] for run in per_run]
            lines.append(f"| {name} | {min(values):.2f} | {statistics.median(values):.2f} | {max(values):.2f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)
    return {name: statistics.median(run[name] for run in per_run) for name in per_run[0]}


if __name__ == "__main__":
    main()
