"""GM-VQ's two loss weights, gamma (the z term) and beta (the aggregated KL), swept on the
validation split only: the choice of the defaults, made without the test split.

    python benchmarks/gmvq_sweep.py [--steps 1000] [--seeds 0 1] [--gammas 0.003 0.01 0.03] \
        [--betas elbo 0.01 0.1] [--output docs/results/gmvq_sweep.md]

Every point trains the Fashion-MNIST VQ-VAE of benchmarks/quantizer_quality.py (same model,
training, 55,000 training images) with `gmvq` and that (gamma, beta), other options at their
defaults, and scores it on the validation split (the last 5,000 training images): reconstruction
MSE from the codes, codebook usage and perplexity, mean ± sd over the seeds. "elbo" is beta=None,
the ELBO's weight for that gamma (gamma / L). The test split is not read.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

from stage1_tokenizer.common.files import write_report
from stage1_tokenizer.data import FashionMNIST, load_fashion_mnist


def _quality_benchmark():
    """benchmarks/quantizer_quality.py (a script, not a package): its model, training and scoring."""
    path = Path(__file__).resolve().parent / "quantizer_quality.py"
    spec = importlib.util.spec_from_file_location("quantizer_quality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_beta(text: str) -> float | None:
    return None if text == "elbo" else float(text)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.003, 0.01, 0.03])
    parser.add_argument("--betas", type=parse_beta, nargs="+", default=[None, 0.01, 0.1], help="numbers, or elbo")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--codebook-size", type=int, default=512)
    parser.add_argument("--code-dim", type=int, default=64)
    parser.add_argument("--hidden-channels", type=int, default=64)
    parser.add_argument("--eval-limit", type=int, default=None, help="score on the first N validation images")
    parser.add_argument("--output", type=Path, default=None, help="the markdown table (and a .json of every run beside it)")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/gmvq_sweep"))
    args = parser.parse_args(argv)
    argv_used = list(sys.argv[1:] if argv is None else argv)
    quality = _quality_benchmark()

    train_images, _ = load_fashion_mnist("train")
    train_size = len(train_images) - quality.VALIDATION_SIZE
    train_dataset = torch.utils.data.Subset(FashionMNIST("train"), range(train_size))
    splits = {"validation": train_images[train_size:][: args.eval_limit]}

    runs = []
    for gamma in args.gammas:
        for beta in args.betas:
            beta_text = "elbo" if beta is None else f"{beta:g}"
            name, key = f"gamma={gamma:g}, beta={beta_text}", f"gmvq-sweep-g{gamma:g}-b{beta_text}"
            variant = (name, "gmvq", {"gamma": gamma, "beta": beta})
            for seed in args.seeds:
                run, _ = quality.train_and_score(key, seed, args.steps, train_dataset, splits, args, variant=variant)
                validation = {k: v for k, v in run["validation"].items() if k != "counts"}
                runs.append({"gamma": gamma, "beta": beta, "seed": seed, "steps": args.steps, "validation": validation})
                print(f"{name}, seed {seed}: validation MSE {validation['mse_from_codes']:.5f}, "
                      f"used {100 * validation['codebook_used']:.1f}%")  # fmt: skip

    report = table(runs, args, argv_used, len(splits["validation"]), quality.mean_sd)
    print("\n" + report)
    if args.output is not None:
        write_report(args.output, report, {"argv": argv_used, "runs": runs})
        print(f"wrote {args.output} and {args.output.with_suffix('.json')}")
    return runs


def table(runs: list[dict], args, argv_used: list[str], validation_size: int, mean_sd) -> str:
    points = list(dict.fromkeys((r["gamma"], r["beta"]) for r in runs))

    def of(point, field):
        return [r["validation"][field] for r in runs if (r["gamma"], r["beta"]) == point]

    best = min(points, key=lambda point: sum(of(point, "mse_from_codes")))
    if len(args.seeds) == 1:  # one seed: no spread to show

        def mean_sd(values, digits, scale=1.0):
            return f"{values[0] * scale:.{digits}f}"

    lines = [
        f"Command: `python benchmarks/gmvq_sweep.py {' '.join(argv_used)}`",
        "",
        f"GM-VQ on Fashion-MNIST, {args.steps} steps, validation split only ({validation_size} images, the last of "
        f"the training split), {'mean ± sd over seeds' if len(args.seeds) > 1 else 'seed'} {' '.join(map(str, args.seeds))}; beta=elbo is the ELBO's "
        f"weight, gamma / {args.code_dim} here. The default is gamma=0.01, beta=0.01.",
        "",
        "| gamma | beta | validation MSE from codes (x1e-3) | codebook used | perplexity |",
        "|---|---|---|---|---|",
    ]
    for point in points:
        gamma, beta = point
        mark = " (lowest MSE)" if point == best else ""
        lines.append(
            f"| {gamma:g} | {'elbo' if beta is None else f'{beta:g}'}{mark} | {mean_sd(of(point, 'mse_from_codes'), 2, 1e3)} | "
            f"{mean_sd(of(point, 'codebook_used'), 1, 100)}% | {mean_sd(of(point, 'perplexity'), 0)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
