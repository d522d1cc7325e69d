"""Quantizer quality on Fashion-MNIST: the same VQ-VAE trained with each quantizer for equal steps.

    python benchmarks/quantizer_quality.py [--steps 1500] [--output-dir outputs/quantizer_quality]

Reports held-out (test split) reconstruction MSE, both from the quantizer's output and from the
codes alone (what a prior's samples get; they differ only for scq, whose output is a convex
combination), codebook usage over the whole test split and its perplexity, and training speed.
Writes results.md, results.json, reconstructions.png and codebook_usage.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from stage1_tokenizer import VQVAEConfig, VQVAEModel
from stage1_tokenizer.data import FashionMNIST, load_fashion_mnist
from stage1_tokenizer.quantizers import CodebookUsage, options_for_run
from stage1_tokenizer.train import compute_loss
from stage1_tokenizer.common.training import TrainingConfig, train
from stage1_tokenizer.common.visualize import plot_codebook_usage, save_image_grid

# Every kind gets k-means init (the default); "+ restarts" adds dead-code restarts.
VARIANTS = {
    "vq": ("vq", {}),
    "vq + restarts": ("vq", {"dead_code_steps": 100}),
    "vq-ema": ("vq-ema", {}),
    "gmvq": ("gmvq", {}),
    "scq": ("scq", {}),
    "scq + restarts": ("scq", {"dead_code_steps": 100}),
}


def train_and_evaluate(name, kind, options, train_dataset, test_images, args):
    torch.manual_seed(args.seed)
    options = options_for_run(kind, options, args.steps)  # GM-VQ anneals its temperature over the run
    config = VQVAEConfig(
        in_channels=1, image_size=28, hidden_channels=args.hidden_channels, code_dim=args.code_dim,
        codebook_size=args.codebook_size, quantizer=kind, quantizer_options=options,
    )  # fmt: skip
    model = VQVAEModel(config)
    # The project's one training loop (Accelerate): each variant's run, TensorBoard logs and
    # model folder stay in OUTPUT_DIR/runs/<variant>.
    training = TrainingConfig(
        output_dir=str(args.output_dir / "runs" / name.replace(" + ", "-")), max_steps=args.steps,
        batch_size=args.batch_size, learning_rate=args.lr, eval_every=0, save_every=args.steps,
        keep_checkpoints=1, seed=args.seed, overwrite_output_dir=True,
    )  # fmt: skip
    train(model, train_dataset, training, compute_loss=compute_loss)
    summary = json.loads((Path(training.output_dir) / "train_summary.json").read_text())
    seconds_per_step = summary["seconds_in_steps"] / summary["steps"]

    model.eval()
    usage = CodebookUsage(args.codebook_size)
    squared_error = squared_error_from_codes = 0.0
    with torch.no_grad():
        for batch in test_images.split(1000):
            output = model(batch)
            usage.update(output.codes[0])
            squared_error += F.mse_loss(output.reconstruction, batch, reduction="sum").item()
            squared_error_from_codes += F.mse_loss(model.decode(output.codes), batch, reduction="sum").item()
        examples = test_images[: args.num_examples]
        reconstructions = model.decode(model.encode(examples)).clamp(0, 1)
    count = test_images.numel()
    fraction_used, perplexity, counts = usage.summarize()
    return {
        "quantizer": name,
        "test_mse": squared_error / count,
        "test_mse_from_codes": squared_error_from_codes / count,
        "codebook_used": fraction_used,
        "test_perplexity": perplexity,
        "ms_per_step": 1000 * seconds_per_step,
    }, reconstructions, counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--codebook-size", type=int, default=512)
    parser.add_argument("--code-dim", type=int, default=64)
    parser.add_argument("--hidden-channels", type=int, default=64)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--num-examples", type=int, default=12)
    parser.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/quantizer_quality"))
    args = parser.parse_args(argv)

    train_dataset = FashionMNIST("train")
    test_images, _ = load_fashion_mnist("test")
    if args.test_limit:
        test_images = test_images[: args.test_limit]
    args.output_dir.mkdir(parents=True, exist_ok=True)

    results, rows, usage_counts = [], [test_images[: args.num_examples]], {}
    for name in args.variants:
        kind, options = VARIANTS[name]
        result, reconstructions, counts = train_and_evaluate(name, kind, options, train_dataset, test_images, args)
        results.append(result)
        rows.append(reconstructions)
        usage_counts[name] = counts
        print(f"{name:>14}: test MSE {result['test_mse']:.5f} (from codes {result['test_mse_from_codes']:.5f}), "
              f"codebook used {100 * result['codebook_used']:.1f}%, perplexity {result['test_perplexity']:.1f}")  # fmt: skip

    baseline = next((r for r in results if r["quantizer"] == "vq"), results[0])
    lines = [
        f"Fashion-MNIST, 28x28 -> 7x7 codes, K={args.codebook_size}, code_dim={args.code_dim}, "
        f"{args.steps} steps of batch {args.batch_size}, AdamW lr {args.lr} (the shared training loop), seed {args.seed}; "
        f"test split: {len(test_images)} images.",
        "",
        "| quantizer | test MSE | test MSE from codes | MSE / vq's | codebook used | test perplexity | ms / step | time / vq's |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['quantizer']} | {r['test_mse']:.5f} | {r['test_mse_from_codes']:.5f} | "
            f"{r['test_mse_from_codes'] / baseline['test_mse_from_codes']:.2f} | {100 * r['codebook_used']:.1f}% | "
            f"{r['test_perplexity']:.1f} | {r['ms_per_step']:.0f} | {r['ms_per_step'] / baseline['ms_per_step']:.2f} |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    (args.output_dir / "results.md").write_text(table + "\n")
    (args.output_dir / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))
    grid = save_image_grid(rows, args.output_dir / "reconstructions.png")
    plot = plot_codebook_usage(usage_counts, args.output_dir / "codebook_usage.png")
    print(f"\nwrote {args.output_dir / 'results.md'}\nwrote {grid} (top row: originals; then one row per quantizer: {', '.join(args.variants)})\nwrote {plot}")
    return results


if __name__ == "__main__":
    main()
