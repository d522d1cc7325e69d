"""Held-out NLL of each prior on Fashion-MNIST codes, through stage two's training CLI.

    python benchmarks/prior_quality.py [--tokenizer DIR] [--steps 1500] [--output-dir outputs/priors] \
        [--output docs/results/prior_quality.md]

Trains the Fashion-MNIST tokenizer (recipes/fashion_mnist.yaml; or reuses --tokenizer), encodes
the 60000 training and 10000 test images, then trains, with the same steps, batch and learning
rate, a class-conditional PixelCNN, WaveNet and transformer prior of about the same size, plus
an unconditional transformer of the conditional one's size. Reports the test NLL in nats per
code and the codes' bits per input dimension, next to two references: log K (a uniform prior)
and the test codes' cross-entropy under the training codes' marginal distribution (a prior that
ignores all context, fitted on the train split, add-one smoothed so no test code is impossible). Writes
results.md / results.json (and, with --output, the table there with its command and a .json beside
it) and, per prior, a PNG with one row of decoded samples per class.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
PRIORS = {  # name: (prior, config JSON, conditional)
    "pixelcnn": ("pixelcnn", {"hidden_channels": 64, "num_layers": 8, "output_channels": 256}, True),
    "wavenet": ("wavenet", {"residual_channels": 96, "skip_channels": 192, "num_layers": 12, "dilation_cycle": 6}, True),
    "transformer": ("transformer", {"hidden_size": 128, "num_layers": 6, "num_heads": 4}, True),
    "transformer, unconditional": ("transformer", {"hidden_size": 128, "num_layers": 6, "num_heads": 4}, False),
}


def marginal_cross_entropy(train_codes: torch.Tensor, test_codes: torch.Tensor, codebook_size: int) -> float:
    """Nats per test code under the train codes' marginal (add-one smoothed): held-out, like the priors' NLL."""
    counts = torch.bincount(train_codes.flatten(), minlength=codebook_size).double() + 1.0
    log_p = (counts / counts.sum()).log()
    return float(-log_p[test_codes.flatten()].mean())


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, default=None, help="a trained tokenizer folder to reuse")
    parser.add_argument("--tokenizer-steps", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=1500, help="training steps of each prior")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--train-limit", type=int, default=None, help="encode only N training images")
    parser.add_argument("--test-limit", type=int, default=None, help="evaluate on N test images")
    parser.add_argument("--priors", default=",".join(PRIORS), help="comma-separated subset of: " + "; ".join(PRIORS))
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "priors")
    parser.add_argument("--output", type=Path, default=None, help="also write the table (markdown) and a .json beside it here")
    args = parser.parse_args(argv)
    argv_used = list(sys.argv[1:] if argv is None else argv)

    from stage1_tokenizer import encode as encode_cli
    from stage1_tokenizer import train as tokenizer_cli
    from stage1_tokenizer.code_dataset import load_code_dataset
    from stage1_tokenizer.common.files import write_report
    from stage2_prior import train as prior_cli

    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = args.tokenizer
    if tokenizer is None:
        tokenizer_cli.main([str(REPO / "recipes" / "fashion_mnist.yaml"), "--max_steps", str(args.tokenizer_steps),
                            "--eval_every", str(args.tokenizer_steps), "--output_dir", str(out / "tokenizer"),
                            "--overwrite_output_dir"])  # fmt: skip
        tokenizer = out / "tokenizer" / "model"
    for split, limit in (("train", args.train_limit), ("test", args.test_limit)):
        encode_cli.main(["--tokenizer", str(tokenizer), "--split", split, "--output_dir", str(out / f"codes-{split}"),
                         "--overwrite_output_dir",
                         *(["--limit", str(limit)] if limit else [])])  # fmt: skip
    train_codes, metadata = load_code_dataset(out / "codes-train")
    codebook_size = metadata["codebook_size"]
    input_dims = 28 * 28
    test_codes = load_code_dataset(out / "codes-test")[0].with_format("torch")[:]["codes_0"].long()
    references = {
        "log K (uniform)": math.log(codebook_size),
        "train marginal, held-out cross-entropy": marginal_cross_entropy(
            train_codes.with_format("torch")[:]["codes_0"].long(), test_codes, codebook_size
        ),
    }

    rows = []
    for name in re.split(r",(?! )", args.priors):  # "transformer, unconditional" is one name
        kind, options, conditional = PRIORS[name.strip()]
        run = out / "runs" / name.strip().replace(", ", "-")
        model, metrics = prior_cli.main([
            "--prior", kind, *[item for key, value in options.items() for item in (f"--model.{key}", str(value))],
            "--conditional", str(conditional).lower(), "--overwrite_output_dir",
            "--tokenizer", str(tokenizer), "--train_codes", str(out / "codes-train"), "--eval_codes", str(out / "codes-test"),
            "--max_steps", str(args.steps), "--batch_size", str(args.batch_size), "--learning_rate", str(args.learning_rate),
            "--eval_every", str(args.steps), "--save_every", str(args.steps), "--output_dir", str(run),
        ])  # fmt: skip
        summary = json.loads((run / "train_summary.json").read_text())
        samples = run / "samples" / f"samples-step-{args.steps:07d}.png"
        if samples.is_file():
            shutil.copyfile(samples, out / f"samples-{run.name}.png")
        rows.append({
            "prior": name.strip(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "nll_nats_per_code": metrics["nll_nats_per_code"],
            "code_bits_per_input_dim": metrics["code_bits_per_input_dim"],
            "ms_per_step": 1000 * summary["seconds_in_steps"] / summary["steps"],
        })  # fmt: skip

    lines = [
        f"Fashion-MNIST codes: 7x7, K={codebook_size}, {len(train_codes)} training and {len(test_codes)} test images; "
        f"each prior {args.steps} steps of batch {args.batch_size}, AdamW lr {args.learning_rate}, seed 0.",
        "",
        "| prior | parameters | test NLL (nats / code) | code bits / input dim | ms / step |",
        "|---|---|---|---|---|",
    ]
    for name, value in references.items():
        lines.append(f"| {name} | | {value:.3f} | {value * 49 / (input_dims * math.log(2)):.4f} | |")
    for r in rows:
        lines.append(
            f"| {r['prior']} | {r['parameters'] / 1e6:.2f}M | {r['nll_nats_per_code']:.3f} | "
            f"{r['code_bits_per_input_dim']:.4f} | {r['ms_per_step']:.0f} |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps({"references": references, "priors": rows}, indent=2))
    if args.output is not None:
        command = f"`python benchmarks/prior_quality.py {' '.join(argv_used)}`"
        write_report(args.output, f"{command}\n\n{table}\n", {"command": argv_used, "references": references, "priors": rows})
    return rows


if __name__ == "__main__":
    main()
