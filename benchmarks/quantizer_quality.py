"""Quantizer quality on Fashion-MNIST: the same VQ-VAE trained with each quantizer variant, over
seeds, with choices made on a validation split and test figures reported once.

    python benchmarks/quantizer_quality.py [--steps 1500] [--seeds 0 1 2] \
        [--output docs/results/quantizer_quality.md] [--output-dir outputs/quantizer_quality]

Splits: the last 5,000 of the 60,000 training images are the validation split; every run trains
on the other 55,000. Each run is scored on validation and on the 10,000 test images; every choice
(a default, a lambda) is read from the validation columns, and the test columns are what the
README reports. Figures are mean ± sd over the seeds.

Per run: reconstruction MSE from the codes alone (`decode(codes)`, what a prior's samples give;
for scq the forward output is a convex combination and differs, shown too), codebook usage over
the split and its perplexity, and milliseconds per training step.

Equal steps and equal wall-clock: every variant trains `--steps` steps; a variant whose step costs
more than 5% more or less than vq's (same seed, measured in this run) also trains a second run of
`steps x vq's ms/step / its ms/step` steps, the steps vq's wall-clock buys it, scored the same way.

Writes the markdown tables (and a JSON of every run beside them) to `--output`, and
reconstructions.png, codebook_usage.png and the runs to `--output-dir`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from stage1_tokenizer import VQVAEConfig, VQVAEModel
from stage1_tokenizer.common.files import write_report
from stage1_tokenizer.common.training import TrainingConfig, train
from stage1_tokenizer.common.visualize import plot_codebook_usage, save_image_grid
from stage1_tokenizer.data import FashionMNIST, load_fashion_mnist
from stage1_tokenizer.quantizers import CodebookUsage, options_for_run
from stage1_tokenizer.train import compute_loss

VALIDATION_SIZE = 5000

# key: (row label, quantizer kind, options). Every kind gets k-means init (the default).
VARIANTS = {
    "vq": ("vq", "vq", {}),
    "vq-restarts": ("vq + dead-code restarts", "vq", {"dead_code_steps": 100}),
    "vq-ema": ("vq-ema", "vq-ema", {}),
    "gmvq": ("gmvq, +Entropy weight beta=0.01 (default)", "gmvq", {}),
    "gmvq-elbo": ("gmvq, ELBO weight (beta=None)", "gmvq", {"beta": None}),
    "gmvq-distance": ("gmvq, +Entropy, z_term=distance", "gmvq", {"z_term": "distance"}),
    "scq": ("scq, ST encoder gradient + line search (ours, default)", "scq", {}),
    "scq-paper": ("scq, paper layer", "scq", {"line_search": False, "straight_through": False}),
    "scq-paper-norm-0.1": (
        "scq, paper layer, normalised, lam=0.1", "scq", {"line_search": False, "straight_through": False, "normalize": True, "lam": 0.1},
    ),  # fmt: skip
    "scq-paper-norm-1": (
        "scq, paper layer, normalised, lam=1", "scq", {"line_search": False, "straight_through": False, "normalize": True, "lam": 1.0},
    ),  # fmt: skip
}


@torch.no_grad()
def score(model: VQVAEModel, images: torch.Tensor, codebook_size: int) -> dict:
    usage = CodebookUsage(codebook_size)
    squared_error = squared_error_from_codes = 0.0
    for batch in images.split(1000):
        output = model(batch)
        usage.update(output.codes[0])
        squared_error += F.mse_loss(output.reconstruction, batch, reduction="sum").item()
        squared_error_from_codes += F.mse_loss(model.decode(output.codes), batch, reduction="sum").item()
    fraction_used, perplexity, counts = usage.summarize()
    return {
        "mse_from_codes": squared_error_from_codes / images.numel(),
        "mse": squared_error / images.numel(),
        "codebook_used": fraction_used,
        "perplexity": perplexity,
        "counts": counts,
    }


def train_and_score(
    key: str, seed: int, steps: int, train_dataset, splits: dict, args, variant: tuple | None = None
) -> tuple[dict, VQVAEModel]:
    """Trains and scores `VARIANTS[key]`, or `variant` (label, kind, options) under the name `key`."""
    _, kind, options = variant or VARIANTS[key]
    torch.manual_seed(seed)
    config = VQVAEConfig(
        in_channels=1, image_size=28, hidden_channels=args.hidden_channels, code_dim=args.code_dim,
        codebook_size=args.codebook_size, quantizer=kind,
        quantizer_options=options_for_run(kind, options, steps),  # GM-VQ anneals its temperature over the run
    )  # fmt: skip
    model = VQVAEModel(config)
    training = TrainingConfig(
        output_dir=str(args.output_dir / "runs" / f"{key}-seed{seed}-steps{steps}"), max_steps=steps,
        batch_size=args.batch_size, learning_rate=args.lr, eval_every=0, save_every=steps,
        keep_checkpoints=1, seed=seed, overwrite_output_dir=True, num_workers=0,
    )  # fmt: skip
    train(model, train_dataset, training, compute_loss=compute_loss)
    summary = json.loads((Path(training.output_dir) / "train_summary.json").read_text())
    model.eval()
    run = {"variant": key, "seed": seed, "steps": steps, "ms_per_step": 1000 * summary["seconds_in_steps"] / summary["steps"]}
    for split, images in splits.items():
        run[split] = score(model, images, args.codebook_size)
    return run, model


def mean_sd(values: list[float], digits: int, scale: float = 1.0) -> str:
    values = [v * scale for v in values]
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def equal_time_run(runs: list[dict], equal_step_run: dict) -> dict:
    """The run of the same variant and seed at vq's wall-clock: its own equal-time run, or the
    equal-step run when its step time was within 5% of vq's."""
    same = [r for r in runs if r["variant"] == equal_step_run["variant"] and r["seed"] == equal_step_run["seed"] and r["equal"] == "time"]
    return same[0] if same else equal_step_run


def tables(runs: list[dict], args, sizes: dict) -> str:
    keys = [k for k in args.variants]
    equal_step = {k: [r for r in runs if r["variant"] == k and r["equal"] == "steps"] for k in keys}
    vq_mse = statistics.fmean(r["test"]["mse_from_codes"] for r in equal_step["vq"]) if equal_step.get("vq") else None
    vq_ms = statistics.fmean(r["ms_per_step"] for r in equal_step["vq"]) if equal_step.get("vq") else None
    lines = [
        f"Command: `python benchmarks/quantizer_quality.py {' '.join(args.argv)}`".rstrip(),
        "",
        f"Fashion-MNIST 28x28 -> 7x7 codes, K={args.codebook_size}, code_dim={args.code_dim}, hidden {args.hidden_channels}; "
        f"batch {args.batch_size}, AdamW lr {args.lr} (the shared training loop); trained on {sizes['train']} images, "
        f"validation {sizes['validation']} (the last of the train split), test {sizes['test']}; seeds {args.seeds}; "
        "mean ± sd over seeds. MSE is from the codes alone (`decode(codes)`).",
        "",
        f"Equal steps ({args.steps} each):",
        "",
        "| quantizer | validation MSE x1e3 | test MSE x1e3 | test MSE / vq's | test codebook used | test perplexity | ms / step | time / vq's |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in keys:
        rows = equal_step[key]
        test_mse = [r["test"]["mse_from_codes"] for r in rows]
        ms = [r["ms_per_step"] for r in rows]
        lines.append(
            f"| {VARIANTS[key][0]} | {mean_sd([r['validation']['mse_from_codes'] for r in rows], 3, 1e3)} | "
            f"{mean_sd(test_mse, 3, 1e3)} | {statistics.fmean(test_mse) / vq_mse:.2f} | "
            f"{mean_sd([r['test']['codebook_used'] for r in rows], 1, 100)}% | {mean_sd([r['test']['perplexity'] for r in rows], 0)} | "
            f"{statistics.fmean(ms):.0f} | {statistics.fmean(ms) / vq_ms:.2f} |"
            if vq_mse else f"| {VARIANTS[key][0]} | | | | | | | |"
        )
    equal_time = [k for k in keys if any(r["variant"] == k and r["equal"] == "time" for r in runs)]
    if equal_time:
        lines += [
            "",
            "Equal wall-clock (each variant trains for the steps that vq's time per step x "
            f"{args.steps} buys it; variants within 5% of vq's step time are the equal-step runs):",
            "",
            "| quantizer | steps | validation MSE x1e3 | test MSE x1e3 | test codebook used |",
            "|---|---|---|---|---|",
        ]
        for key in keys:
            rows = [equal_time_run(runs, run) for run in equal_step[key]]  # per seed
            steps = sorted({r["steps"] for r in rows})
            lines.append(
                f"| {VARIANTS[key][0]} | {'-'.join(map(str, [steps[0], steps[-1]] if len(steps) > 1 else steps))} | "
                f"{mean_sd([r['validation']['mse_from_codes'] for r in rows], 3, 1e3)} | "
                f"{mean_sd([r['test']['mse_from_codes'] for r in rows], 3, 1e3)} | "
                f"{mean_sd([r['test']['codebook_used'] for r in rows], 1, 100)}% |"
            )
    lines += ["", "Chosen on validation (lowest validation MSE from codes, equal steps):"]
    for family in ("gmvq", "scq"):
        candidates = [k for k in keys if VARIANTS[k][1] == family]
        if candidates:
            best = min(candidates, key=lambda k: statistics.fmean(r["validation"]["mse_from_codes"] for r in equal_step[k]))
            lines.append(f"- {family}: {VARIANTS[best][0]}")
    scq_rows = [k for k in keys if VARIANTS[k][1] == "scq"]
    if scq_rows:
        lines += ["", "SCQ's forward output (a convex combination) against its codes, test MSE x1e3:", ""]
        lines += ["| quantizer | output | codes |", "|---|---|---|"]
        for key in scq_rows:
            rows = equal_step[key]
            lines.append(
                f"| {VARIANTS[key][0]} | {mean_sd([r['test']['mse'] for r in rows], 3, 1e3)} | "
                f"{mean_sd([r['test']['mse_from_codes'] for r in rows], 3, 1e3)} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--codebook-size", type=int, default=512)
    parser.add_argument("--code-dim", type=int, default=64)
    parser.add_argument("--hidden-channels", type=int, default=64)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--no-equal-time", action="store_true", help="skip the equal wall-clock runs")
    parser.add_argument("--num-examples", type=int, default=12)
    parser.add_argument("--eval-limit", type=int, default=None, help="score on the first N validation and test images")
    parser.add_argument("--output", type=Path, default=None, help="the markdown tables (and a .json of every run beside them)")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/quantizer_quality"))
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if "vq" not in args.variants:
        raise ValueError("--variants must include vq: the ratios and the equal wall-clock budget are vq's.")

    train_images, _ = load_fashion_mnist("train")
    train_size = len(train_images) - VALIDATION_SIZE
    train_dataset = torch.utils.data.Subset(FashionMNIST("train"), range(train_size))
    test_images, _ = load_fashion_mnist("test")
    splits = {"validation": train_images[train_size:][: args.eval_limit], "test": test_images[: args.eval_limit]}
    sizes = {"train": train_size, **{name: len(images) for name, images in splits.items()}}
    args.output_dir.mkdir(parents=True, exist_ok=True)

    runs, examples, usage = [], [splits["test"][: args.num_examples]], {}
    for seed in args.seeds:
        vq_ms = None
        for key in ["vq", *[k for k in args.variants if k != "vq"]]:  # vq first: its step time is the budget
            run, model = train_and_score(key, seed, args.steps, train_dataset, splits, args)
            runs.append({**run, "equal": "steps"})
            vq_ms = run["ms_per_step"] if key == "vq" else vq_ms
            if seed == args.seeds[0]:
                with torch.no_grad():
                    examples.append(model.decode(model.encode(splits["test"][: args.num_examples])).clamp(0, 1))
                usage[VARIANTS[key][0]] = run["test"]["counts"]
            print(f"seed {seed} {key:>20}: validation MSE {run['validation']['mse_from_codes']:.5f}, "
                  f"test MSE {run['test']['mse_from_codes']:.5f}, used {100 * run['test']['codebook_used']:.1f}%, "
                  f"{run['ms_per_step']:.0f} ms/step")  # fmt: skip
            ratio = vq_ms / run["ms_per_step"]
            if not args.no_equal_time and key != "vq" and abs(ratio - 1) > 0.05:
                budget_steps = max(1, round(args.steps * ratio))
                timed, _ = train_and_score(key, seed, budget_steps, train_dataset, splits, args)
                runs.append({**timed, "equal": "time"})

    report = tables(runs, args, sizes)
    print("\n" + report)
    if args.output is not None:
        stripped = [{**r, **{s: {k: v for k, v in r[s].items() if k != "counts"} for s in splits}} for r in runs]
        write_report(args.output, report, {"argv": args.argv, "runs": stripped})
        print(f"wrote {args.output} and {args.output.with_suffix('.json')}")
    order = ", ".join(VARIANTS[k][0] for k in ["vq", *[k for k in args.variants if k != "vq"]])
    grid = save_image_grid(examples, args.output_dir / "reconstructions.png")
    plot = plot_codebook_usage(usage, args.output_dir / "codebook_usage.png")
    print(f"wrote {grid} (top row: test originals; then from codes, seed {args.seeds[0]}: {order})\nwrote {plot}")
    return runs


if __name__ == "__main__":
    main()
