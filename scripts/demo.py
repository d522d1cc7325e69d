"""The main job: Fashion-MNIST from pixels to a class-conditional image generator, on CPU.

    bash scripts/demo.sh            # = .venv/bin/python scripts/demo.py [--tokenizer-steps N] [--prior-steps N]

1. trains the VQ-VAE tokenizer (recipes/fashion_mnist.yaml: GM-VQ, 7x7 codes, K=512);
2. encodes the training and test images into code datasets;
3. trains a class-conditional PixelCNN prior on the codes (recipes/fashion_mnist_prior.yaml) and
   writes the generator bundle (tokenizer + prior) to outputs/demo/bundle;
4. loads it with `transformers.pipeline("vq-image-gen", ...)` and writes samples.png (one row per
   class) and reconstructions.png (test images over their reconstructions from the codes).
Each stage shows a progress bar; the run takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent

from stage1_tokenizer import VQVAEModel
from stage1_tokenizer import encode as encode_cli
from stage1_tokenizer import train as tokenizer_cli
from stage1_tokenizer.data import FashionMNIST
from stage1_tokenizer.common.visualize import save_image_grid
from stage2_prior import train as prior_cli


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "demo")
    parser.add_argument("--tokenizer-steps", type=int, default=1000)
    parser.add_argument("--prior-steps", type=int, default=1500)
    parser.add_argument("--train-limit", type=int, default=None, help="use only N training images")
    parser.add_argument("--samples-per-class", type=int, default=10)
    args = parser.parse_args(argv)
    out = args.output_dir
    started = time.perf_counter()
    limit = ["--train_limit", str(args.train_limit)] if args.train_limit else []

    print("1/4 training the tokenizer", flush=True)
    tokenizer_cli.main([str(REPO / "recipes" / "fashion_mnist.yaml"), "--max_steps", str(args.tokenizer_steps),
                        "--eval_every", str(args.tokenizer_steps), "--save_every", str(args.tokenizer_steps),
                        "--output_dir", str(out / "tokenizer"), "--overwrite_output_dir", *limit])  # fmt: skip
    tokenizer_dir = out / "tokenizer" / "model"

    print("2/4 encoding the images into codes", flush=True)
    for split in ("train", "test"):
        encode_cli.main(["--tokenizer", str(tokenizer_dir), "--split", split, "--output_dir", str(out / f"codes-{split}"),
                         "--overwrite_output_dir",
                         *(["--limit", str(args.train_limit)] if args.train_limit and split == "train" else [])])  # fmt: skip

    print("3/4 training the class-conditional prior", flush=True)
    _, prior_metrics = prior_cli.main([str(REPO / "recipes" / "fashion_mnist_prior.yaml"), "--tokenizer", str(tokenizer_dir),
                                       "--train_codes", str(out / "codes-train"), "--eval_codes", str(out / "codes-test"),
                                       "--max_steps", str(args.prior_steps), "--eval_every", str(args.prior_steps),
                                       "--save_every", str(args.prior_steps), "--output_dir", str(out / "prior"),
                                       "--bundle_dir", str(out / "bundle"), "--overwrite_output_dir"])  # fmt: skip

    print("4/4 sampling with the pipeline", flush=True)
    import transformers

    import pipelines  # noqa: F401  (registers vq-image-gen)

    generate = transformers.pipeline("vq-image-gen", model=str(out / "bundle"))
    labels = generate.model.config.id2label
    rows = []
    for class_id in sorted(labels):
        rows.append(generate(class_id, num_images=args.samples_per_class, seed=class_id, output_type="pt"))
    samples = save_image_grid(rows, out / "samples.png")

    tokenizer = VQVAEModel.from_pretrained(tokenizer_dir).eval()
    originals = FashionMNIST("test", limit=16).images
    with torch.no_grad():
        reconstructions = tokenizer.decode(tokenizer.encode(originals))
    reconstruction_png = save_image_grid([originals, reconstructions], out / "reconstructions.png")

    results = {
        "command": "bash scripts/demo.sh",
        "seconds": round(time.perf_counter() - started, 1),  # after set-up: the four stages
        "tokenizer_steps": args.tokenizer_steps,
        "prior_steps": args.prior_steps,
        "prior_nll_nats_per_code": prior_metrics["nll_nats_per_code"],
        "log_codebook_size": float(torch.log(torch.tensor(float(tokenizer.config.codebook_size)))),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nsamples, one row per class ({', '.join(labels[i] for i in sorted(labels))}): {samples}")
    print(f"test images over their reconstructions from the codes: {reconstruction_png}")
    print(f"held-out prior NLL: {prior_metrics['nll_nats_per_code']:.3f} nats per code; {results['seconds']:.0f} s in all")
    print(f"bundle: {out / 'bundle'}\n\nGenerate more:\n")
    print("    import pipelines, transformers")
    print(f'    image = transformers.pipeline("vq-image-gen", model="{out / "bundle"}")("sneaker")\n')
    return {"samples": samples, "reconstructions": reconstruction_png, "bundle": out / "bundle", **prior_metrics}


if __name__ == "__main__":
    main()
