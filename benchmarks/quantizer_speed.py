"""Quantizer speed: forward + backward of each kind, against vector-quantize-pytorch and a bare floor.

    python benchmarks/quantizer_speed.py [--vectors 32768] [--dim 64] [--codebook-size 512] [--repeats 15]

All candidates run interleaved in one process (round-robin, `--repeats` rounds, median per
candidate), so the machine's noise hits them alike; the table gives ratios, not bare times.
- floor: one distance matmul, argmin, gather, straight-through; no loss, no codebook update.
- vector-quantize-pytorch: `VectorQuantize` with EMA (decay 0.99), rotation trick and k-means off.
- scq's unavoidable work: the forward work no exact SCQ can skip: the nearest codes, the rows of
  P (a second N x D x K matmul) and each row's 8 largest entries; no loss, no backward.
Inputs: Gaussian vectors, and the codebook k-means-initialised on them (so every code is in use).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from stage1_tokenizer.quantizers import build_quantizer
from stage1_tokenizer.quantizers.vq import nearest_codes, row_blocks


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


class ScqUnavoidableWork(Floor):
    """The nearest codes, then P = P_vq + y C^T and its 8 largest entries per row (no gradient)."""

    def forward(self, z):
        with torch.no_grad():
            codebook = self.codebook
            codes = nearest_codes(z, codebook)
            gram = codebook.t() @ codebook + torch.eye(codebook.shape[1])
            y = (z - codebook[codes]) @ torch.linalg.inv(gram)
            for rows in row_blocks(z.shape[0], codebook.shape[0]):
                dense = y[rows] @ codebook.t()
                dense.scatter_add_(1, codes[rows, None], torch.ones_like(dense[:, :1]))
                dense.topk(min(8, codebook.shape[0]), dim=1)
        return z, z.sum() * 0


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
    for kind in ("vq", "vq-ema", "gmvq", "scq"):
        candidates[kind] = build_quantizer(kind, args.codebook_size, args.dim)
    candidates["scq's unavoidable work"] = ScqUnavoidableWork(args.codebook_size, args.dim)
    for name, module in candidates.items():
        module.train()
        if name in ("vq", "vq-ema", "gmvq", "scq"):
            module(data)  # k-means init on the benchmark data
            codebook = module.codebook.detach()
    # the floor and the reference start from the same k-means codebook as ours
    with torch.no_grad():
        candidates["floor"].codebook.copy_(codebook)
        candidates["scq's unavoidable work"].codebook.copy_(codebook)
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
    elif name in ("floor", "scq's unavoidable work"):
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
