"""Quantizer speed: forward + backward of each kind, against vector-quantize-pytorch and a bare floor.

    python benchmarks/quantizer_speed.py [--vectors 32768] [--dim 64] [--codebook-size 512] [--repeats 15]

All candidates run interleaved in one process (round-robin, `--repeats` rounds, median per
candidate), so the machine's noise hits them alike; the table gives ratios, not bare times.
- floor: one distance matmul, argmin, gather, straight-through; no loss, no codebook update.
- vector-quantize-pytorch: `VectorQuantize` with EMA (decay 0.99), rotation trick and k-means off.
- scq, portable torch path: scq with `cpu_kernels=False`, the torch ops it runs on other devices.
Inputs: Gaussian vectors, and the codebook k-means-initialised on them (so every code is in use).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from stage1_tokenizer.quantizers import build_quantizer


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


SCQ_TORCH = "scq, portable torch path"  # what scq runs on other devices; on CPU it runs numba kernels


def make_candidates(args, data):
    candidates = {"floor": Floor(args.codebook_size, args.dim)}
    try:
        from vector_quantize_pytorch import VectorQuantize

        candidates["vector-quantize-pytorch (EMA)"] = VectorQuantize(
            dim=args.dim, codebook_size=args.codebook_size, decay=0.99, commitment_weight=0.25,
            kmeans_init=False, rotation_trick=False,
        )  # fmt: skip
    except ImportError:
        print("vector-quantize-pytorch is not installed (pip install -e '.[dev]'): skipping it")
    ours = {kind: build_quantizer(kind, args.codebook_size, args.dim) for kind in ("vq", "vq-ema", "gmvq", "scq")}
    ours[SCQ_TORCH] = build_quantizer("scq", args.codebook_size, args.dim, cpu_kernels=False)
    candidates.update(ours)
    for name, module in candidates.items():
        module.train()
        if name in ours:
            module(data)  # k-means init on the benchmark data
            codebook = module.codebook.detach()
    # the floor and the reference start from the same k-means codebook as ours
    with torch.no_grad():
        candidates["floor"].codebook.copy_(codebook)
        if "vector-quantize-pytorch (EMA)" in candidates:
            reference = candidates["vector-quantize-pytorch (EMA)"]._codebook
            reference.embed.copy_(codebook[None])
            reference.embed_avg.copy_(codebook[None])
            reference.initted.fill_(True)
    return candidates


def step(name, module, data):
    z = data.clone().requires_grad_()
    if name == "vector-quantize-pytorch (EMA)":
        quantized, _, loss = module(z[None])
        quantized = quantized[0]
    elif name == "floor":
        quantized, loss = module(z)
    else:
        output = module(z)
        quantized, loss = output.quantized, output.loss
    (quantized.square().mean() + loss).backward()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=32768)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--codebook-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    data = torch.randn(args.vectors, args.dim)
    candidates = make_candidates(args, data)
    times = {name: [] for name in candidates}
    for name, module in candidates.items():  # warm-up
        step(name, module, data)
    for _ in range(args.repeats):
        for name, module in candidates.items():
            start = time.perf_counter()
            step(name, module, data)
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"forward+backward, {args.vectors} vectors x dim {args.dim}, K={args.codebook_size}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved rounds\n"
    )
    print("| quantizer | time / floor | time / vq | time / vector-quantize-pytorch |")
    print("|---|---|---|---|")
    reference = median.get("vector-quantize-pytorch (EMA)")
    for name, value in median.items():
        versus_reference = f"{value / reference:.2f}" if reference else "n/a"
        print(f"| {name} | {value / median['floor']:.2f} | {value / median['vq']:.2f} | {versus_reference} |")
    return median


if __name__ == "__main__":
    main()
