"""Sampling speed of the three priors with and without their caches, and peak memory.

    python benchmarks/prior_sampling.py [--batch-size 1] [--priors wavenet,pixelcnn,transformer] [--quick]

WaveNet over 4096 steps, PixelCNN over a 32x32 grid, the transformer over 1024 tokens, each at
its config's default size, K=512, class-conditional. Every (prior, cache) pair runs in its own
fresh process, cached and uncached back to back, so that peak memory is that run's alone: the
increase of the process's peak resident set over its size just before `generate`. Uncached
means the network over all rows generated so far at every step (`use_cache=False`). The same
generator seed is used for both, and the benchmark checks that they return the same codes.
Prints a markdown table of seconds, the speed-up (uncached time / cached time) and memory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
SETTINGS = {  # kind: (code_shape, target speed-up from issue 4)
    "wavenet": ((4096,), 30),
    "pixelcnn": ((32, 32), 10),
    "transformer": ((1024,), 5),
}
QUICK = {"wavenet": (256,), "pixelcnn": (8, 8), "transformer": (64,)}


def build(kind: str, shape):
    from stage2_prior import PRIORS

    config_class, model_class = PRIORS[kind]
    torch.manual_seed(0)
    return model_class(config_class(codebook_size=512, code_shape=shape, num_classes=10)).eval()


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(kind: str, use_cache: bool, shape, batch_size: int) -> dict:
    model = build(kind, shape)
    condition = torch.arange(batch_size) % 10
    with torch.no_grad():  # warm-up: the first calls of a fresh process pay one-off set-up costs
        model(torch.zeros(batch_size, *shape, dtype=torch.long), condition)
        cache = model._init_cache(batch_size, condition, None)
        for index in range(2):
            model._cached_logits(cache, torch.zeros(batch_size, *shape, dtype=torch.long), index)
        del cache
    before = resident_mb()
    start = time.perf_counter()
    codes = model.generate(batch_size, condition=condition, generator=torch.Generator().manual_seed(0), use_cache=use_cache)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds": seconds,
        "peak_increase_mb": max(0.0, peak - before),
        "codes_sha": hashlib.sha256(codes.numpy().tobytes()).hexdigest(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def run_worker(kind, use_cache, shape, batch_size) -> dict:
    command = [sys.executable, __file__, "--worker", kind, str(int(use_cache)), ",".join(map(str, shape)), str(batch_size)]
    result = subprocess.run(command, capture_output=True, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.decode()[-3000:])
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="short sequences (a smoke test, not the benchmark)")
    parser.add_argument("--priors", default=",".join(SETTINGS), help="comma-separated subset of: " + ", ".join(SETTINGS))
    parser.add_argument("--output", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, use_cache, shape, batch_size = args.worker
        print(json.dumps(worker(kind, use_cache == "1", tuple(int(s) for s in shape.split(",")), int(batch_size))))
        return []
    rows = []
    for kind in args.priors.split(","):
        shape, target = SETTINGS[kind]
        shape = QUICK[kind] if args.quick else shape
        cached = run_worker(kind, True, shape, args.batch_size)
        uncached = run_worker(kind, False, shape, args.batch_size)
        if cached["codes_sha"] != uncached["codes_sha"]:
            raise AssertionError(f"{kind}: cached and uncached sampling returned different codes")
        row = {
            "prior": kind,
            "shape": "x".join(map(str, shape)),
            "parameters": cached["parameters"],
            "cached_s": cached["seconds"],
            "uncached_s": uncached["seconds"],
            "speedup": uncached["seconds"] / cached["seconds"],
            "target": target,
            "cached_peak_mb": cached["peak_increase_mb"],
            "uncached_peak_mb": uncached["peak_increase_mb"],
        }
        rows.append(row)
        print(f"{kind}: {row['speedup']:.1f}x", file=sys.stderr)
    print(
        f"\nbatch {args.batch_size}, K=512, class-conditional, default sizes, {torch.get_num_threads()} threads; "
        "cached and uncached returned identical codes\n"
    )
    print("| prior | codes | parameters | cached s | uncached s | speed-up | target | peak MB cached | peak MB uncached |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['prior']} | {r['shape']} | {r['parameters'] / 1e6:.2f}M | {r['cached_s']:.2f} | {r['uncached_s']:.1f} | "
            f"{r['speedup']:.1f}x | {r['target']}x | {r['cached_peak_mb']:.0f} | {r['uncached_peak_mb']:.0f} |"
        )
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
