"""Frames per second of the first-person frames setting: the ViZDoom source, and encoding and
decoding at both stages (84x84x3 frames <-> 21x21 codes <-> 3 codes).

    python benchmarks/frames_throughput.py [--batch-size 64] [--rounds 5] [--output docs/results/frames_throughput.md]

The models have the recipes' sizes (recipes/vizdoom.yaml: hidden 128, K=512; the latent VQ-VAE's
defaults), untrained: weights do not change the speed. Timings are medians of interleaved rounds
in one process; the latent PixelCNN decoder samples 441 positions per frame with its cache, so
it is timed on fewer frames. The source is timed generating a fresh split in a temporary cache
(engine, exploring agent, resizing and writing the compressed cache), `--source-frames` frames.
Prints a markdown table of frames per second and the ratios to the frame tokenizer's encoding.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from stage1_tokenizer import (
    LatentVQVAEConfig,
    LatentVQVAEModel,
    VQVAEConfig,
    VQVAEModel,
)
from stage1_tokenizer.common.files import write_report


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


@torch.no_grad()
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pixelcnn-frames", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--source-frames", type=int, default=600)
    parser.add_argument("--output", type=Path, default=None, help="the markdown table (and a .json beside it)")
    args = parser.parse_args(argv)
    argv_used = list(sys.argv[1:] if argv is None else argv)
    from stage1_tokenizer.data import VizDoomFrames

    torch.manual_seed(0)
    tokenizer = VQVAEModel(VQVAEConfig(in_channels=3, image_size=84, hidden_channels=128, code_dim=64, codebook_size=512,
                                       quantizer="vq-ema")).eval()  # fmt: skip
    latent_conv = LatentVQVAEModel(LatentVQVAEConfig(decoder="conv")).eval()
    latent_pixelcnn = LatentVQVAEModel(LatentVQVAEConfig(decoder="pixelcnn")).eval()
    frames = torch.rand(args.batch_size, 3, 84, 84)
    grid = tokenizer.encode(frames)[0]
    codes = latent_conv.encode(grid)
    few = codes[0][: args.pixelcnn_frames]
    steps = {  # name: (function, frames it handles)
        "encode frames -> 21x21 codes": (lambda: tokenizer.encode(frames), args.batch_size),
        "decode 21x21 codes -> frames": (lambda: tokenizer.decode(grid), args.batch_size),
        "encode 21x21 codes -> 3 codes": (lambda: latent_conv.encode(grid), args.batch_size),
        "decode 3 codes -> 21x21 codes (conv)": (lambda: latent_conv.decode(codes), args.batch_size),
        "decode 3 codes -> 21x21 codes (PixelCNN, cached)": (
            lambda: latent_pixelcnn.decode(few, generator=torch.Generator().manual_seed(0)), len(few)
        ),
    }
    for function, _ in steps.values():  # warm-up: first calls pay one-off set-up costs
        function()
    seconds = {name: [] for name in steps}
    for _ in range(args.rounds):  # interleaved, so that the machine's noise hits every row alike
        for name, (function, _) in steps.items():
            seconds[name].append(timed(function))
    fps = {name: steps[name][1] / statistics.median(values) for name, values in seconds.items()}
    with tempfile.TemporaryDirectory() as cache:
        source_seconds = timed(lambda: VizDoomFrames("test", args.source_frames, cache_dir=cache))
    fps["ViZDoom source (render, explore, resize, cache)"] = args.source_frames / source_seconds

    reference = fps["encode frames -> 21x21 codes"]
    lines = [
        f"Command: `python benchmarks/frames_throughput.py {' '.join(argv_used)}`",
        "",
        f"{torch.get_num_threads()} threads, untrained recipe-size models, batch {args.batch_size} "
        f"(PixelCNN: {len(few)} frames), medians of {args.rounds} interleaved rounds; the source generating "
        f"a fresh {args.source_frames}-frame split once.",
        "",
        "| step | frames per second | vs encoding frames |",
        "|---|---|---|",
        *[f"| {name} | {rate:,.1f} | {rate / reference:.3g}x |" for name, rate in fps.items()],
    ]
    table = "\n".join(lines)
    print("\n" + table)
    if args.output:
        write_report(args.output, table + "\n", {"command": argv_used, "frames_per_second": fps})
    return fps


if __name__ == "__main__":
    main()
