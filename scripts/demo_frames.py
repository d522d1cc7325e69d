"""The first-person frames part of the main job (the paper's DeepMind Lab setting, on ViZDoom): frames
to 21x21 codes to 3 codes and back, and new frames sampled per map, on CPU.

    bash scripts/demo.sh frames     # = .venv/bin/python scripts/demo_frames.py [--tokenizer-steps N] ...

1. records ViZDoom frames on first use (6 maps, 6000 + 600 frames at 84x84) and trains the frame
   tokenizer (recipes/vizdoom.yaml: 84x84x3 -> 21x21 codes, K=512; here 64 channels wide);
2. encodes both splits into 21x21 code datasets;
3. trains the latent VQ-VAE on them (21x21 codes -> 3 codes, K=512: 27 bits per frame);
4. encodes those into 3-code datasets and trains a map-conditioned transformer prior on them;
5. writes round_trip.png (held-out frames, decoded from their 21x21 codes, decoded from their 3
   codes, one column per frame across the maps) and samples.png (new frames, one row per map).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent

from stage1_tokenizer import encode as encode_cli
from stage1_tokenizer import frames_round_trip
from stage1_tokenizer import train as tokenizer_cli
from stage1_tokenizer import train_latent as latent_cli
from stage1_tokenizer.data import VizDoomFrames
from stage1_tokenizer.common.visualize import save_image_grid
from stage2_prior import train as prior_cli


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "demo" / "frames")
    parser.add_argument("--tokenizer-steps", type=int, default=600)
    parser.add_argument("--latent-steps", type=int, default=600)
    parser.add_argument("--prior-steps", type=int, default=300)
    parser.add_argument("--samples-per-map", type=int, default=8)
    args = parser.parse_args(argv)
    out = args.output_dir

    print("1/5 training the frame tokenizer (84x84 -> 21x21 codes)", flush=True)
    tokenizer, tokenizer_metrics = tokenizer_cli.main([
        str(REPO / "recipes" / "vizdoom.yaml"), "--max_steps", str(args.tokenizer_steps), "--eval_every", str(args.tokenizer_steps),
        "--save_every", str(args.tokenizer_steps), "--output_dir", str(out / "tokenizer"), "--overwrite_output_dir",
        "--model.hidden_channels", "64",  # CPU-sized (the recipe's 128 is for GPUs)
    ])  # fmt: skip
    print("2/5 encoding the frames into 21x21 codes", flush=True)
    for split in ("train", "test"):
        encode_cli.main(["--tokenizer", str(out / "tokenizer" / "model"), "--dataset", "vizdoom", "--split", split,
                         "--output_dir", str(out / f"codes-{split}"), "--overwrite_output_dir"])  # fmt: skip
    print("3/5 training the latent VQ-VAE (21x21 codes -> 3 codes)", flush=True)
    latent, latent_metrics = latent_cli.main([
        str(REPO / "recipes" / "vizdoom_latent.yaml"),
        "--tokenizer", str(out / "tokenizer" / "model"), "--train_codes", str(out / "codes-train"),
        "--eval_codes", str(out / "codes-test"), "--max_steps", str(args.latent_steps), "--eval_every", str(args.latent_steps),
        "--save_every", str(args.latent_steps), "--model.hidden_channels", "64",
        "--output_dir", str(out / "latent"), "--overwrite_output_dir",
    ])  # fmt: skip
    print("4/5 training the map-conditioned prior over the 3 codes", flush=True)
    for split in ("train", "test"):
        encode_cli.main(["--tokenizer", str(out / "latent" / "model"), "--codes", str(out / f"codes-{split}"),
                         "--output_dir", str(out / f"latent-codes-{split}"), "--overwrite_output_dir"])  # fmt: skip
    prior, prior_metrics = prior_cli.main([
        "--prior", "transformer", "--model.hidden_size", "128", "--model.num_layers", "4", "--model.num_heads", "4",
        "--tokenizer", str(out / "latent" / "model"), "--train_codes", str(out / "latent-codes-train"),
        "--eval_codes", str(out / "latent-codes-test"), "--max_steps", str(args.prior_steps), "--eval_every", str(args.prior_steps),
        "--save_every", str(args.prior_steps), "--batch_size", "64", "--learning_rate", "0.002", "--output_dir", str(out / "prior"),
        "--overwrite_output_dir",
    ])  # fmt: skip

    print("5/5 writing the round trip and samples", flush=True)
    tokenizer, latent, prior = tokenizer.eval(), latent.eval(), prior.eval()
    test = VizDoomFrames("test")
    picks = torch.linspace(0, len(test) - 1, 12).long().tolist()  # across the maps
    frames = torch.stack([test[i]["pixel_values"] for i in picks])
    trip = frames_round_trip(tokenizer, latent, frames)
    round_trip = save_image_grid([frames, trip["from_grid"].clamp(0, 1), trip["from_codes"].clamp(0, 1)], out / "round_trip.png")
    maps = torch.arange(len(test.class_names)).repeat_interleave(args.samples_per_map)
    codes = prior.generate(len(maps), condition=maps, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sampled = tokenizer.decode(latent.decode(codes)).clamp(0, 1)
    samples = save_image_grid(list(sampled.view(len(test.class_names), args.samples_per_map, *sampled.shape[1:])), out / "samples.png")

    print(f"\nheld-out frames over their reconstructions from 21x21 codes and from 3 codes ({latent.bits_per_frame:.0f} bits): {round_trip}")
    print(f"new frames, one row per map ({', '.join(test.class_names)}): {samples}")
    print(f"held-out MSE from 21x21 codes {tokenizer_metrics['mse_from_codes']:.5f}; latent cross-entropy "
          f"{latent_metrics['cross_entropy']:.3f} nats per 21x21 code, {latent_metrics['code_accuracy']:.1%} of them right; "
          f"prior NLL {prior_metrics['nll_nats_per_code']:.3f} nats per code")  # fmt: skip
    return {"round_trip": round_trip, "samples": samples, **tokenizer_metrics, **latent_metrics}


if __name__ == "__main__":
    main()
