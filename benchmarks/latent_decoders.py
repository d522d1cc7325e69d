"""Latent VQ-VAE decoders side by side: held-out frames -> 21x21 codes -> 3 codes -> 21x21 codes -> frames.

    python benchmarks/latent_decoders.py --tokenizer outputs/demo/frames/tokenizer/model \
        --models outputs/demo/frames/latent/model outputs/demo/frames/latent-pixelcnn/model [--frames 120] \
        [--output docs/results/latent_decoders.md]

For each latent model (trained on that tokenizer's codes, e.g. with `--decoder conv` and
`--decoder pixelcnn`), on the first `--frames` held-out ViZDoom frames spread over the maps:
- NLL of the 21x21 codes given the 3 codes, in nats per code (teacher-forced for the PixelCNN
  decoder; both are exact likelihoods, so they compare), and in bits per frame;
- the fraction of 21x21 codes decoded back exactly, and the frame MSE decoded from the 3 codes
  (next to the MSE from the 21x21 codes themselves, the tokenizer's own error);
- decoding speed in frames per second (the PixelCNN decoder samples, once per temperature).
With `--picture PATH`, a PNG of 12 of the frames: originals, from their 21x21 codes, then one
row per decoder (and temperature) from their 3 codes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel

from stage1_tokenizer.common.files import write_report
from stage1_tokenizer.data import VizDoomFrames
from stage1_tokenizer.common.visualize import save_image_grid


@torch.no_grad()
def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True, help="the frame tokenizer (84x84 -> 21x21 codes)")
    parser.add_argument("--models", type=Path, nargs="+", required=True, help="latent models trained on its codes")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.5], help="for sampling decoders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--picture", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=None, help="the markdown table (and a .json beside it)")
    args = parser.parse_args(argv)
    argv_used = list(sys.argv[1:] if argv is None else argv)

    tokenizer = AutoModel.from_pretrained(args.tokenizer).eval()
    test = VizDoomFrames("test")
    picks = torch.linspace(0, len(test) - 1, min(args.frames, len(test))).long().tolist()
    frames = torch.stack([test[i]["pixel_values"] for i in picks])
    grid_codes = tokenizer.encode(frames)[-1]  # (B, 21, 21)
    from_grid = tokenizer.decode(grid_codes)
    grid_mse = F.mse_loss(from_grid, frames).item()
    shown = torch.linspace(0, len(frames) - 1, 12).long()
    picture_rows = [frames[shown], from_grid[shown].clamp(0, 1)]
    codes_per_frame = grid_codes[0].numel()

    rows = []
    for path in args.models:
        model = AutoModel.from_pretrained(path).eval()
        nll = model(grid_codes).reconstruction_loss.item()
        codes = model.encode(grid_codes)[0]
        sampling = model.config.decoder != "conv"
        for temperature in args.temperatures if sampling else [None]:
            options = {"temperature": temperature, "generator": torch.Generator().manual_seed(args.seed)} if sampling else {}
            start = time.perf_counter()
            decoded = model.decode(codes, **options)
            seconds = time.perf_counter() - start
            reconstruction = tokenizer.decode(decoded)
            picture_rows.append(reconstruction[shown].clamp(0, 1))
            rows.append({
                "model": str(path), "decoder": model.config.decoder, "temperature": temperature,
                "nll_nats_per_code": nll, "bits_per_frame": nll * codes_per_frame / math.log(2),
                "codes_exact": (decoded == grid_codes).float().mean().item(),
                "mse_from_3_codes": F.mse_loss(reconstruction, frames).item(), "mse_from_grid": grid_mse,
                "frames_per_second": len(frames) / seconds,
            })  # fmt: skip

    lines = [
        f"Command: `python benchmarks/latent_decoders.py {' '.join(argv_used)}`",
        "",
        f"{len(frames)} held-out ViZDoom frames; 21x21 codes -> {model.config.code_grid} codes -> 21x21 codes -> frames; "
        f"{torch.get_num_threads()} torch thread(s).",
        "",
        "| decoder | temperature | NLL (nats / 21x21 code) | bits / frame | codes exact | MSE from 3 codes | MSE from 21x21 codes | decode frames/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        temperature = "argmax" if r["temperature"] is None else f"{r['temperature']:g}"
        lines.append(f"| {r['decoder']} | {temperature} | {r['nll_nats_per_code']:.3f} | {r['bits_per_frame']:.0f} | "
                     f"{r['codes_exact']:.1%} | {r['mse_from_3_codes']:.4f} | {r['mse_from_grid']:.4f} | {r['frames_per_second']:.1f} |")  # fmt: skip
    table = "\n".join(lines)
    print(table)
    if args.output:
        write_report(args.output, table + "\n", {"command": argv_used, "rows": rows})
    if args.picture:
        print(f"\nwrote {save_image_grid(picture_rows, args.picture)} (originals, from 21x21 codes, then each row above from 3 codes)")
    return rows


if __name__ == "__main__":
    main()
