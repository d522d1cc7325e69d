"""What a training step of each speech decoder costs, side by side: the conv decoder on the spectral
loss alone, with the mel loss (recipes/speech.yaml), against HiFi-GAN's discriminators
(recipes/speech_adversarial.yaml), and the paper's WaveNet decoder (recipes/speech_wavenet.yaml).

    python benchmarks/speech_train_cost.py [--steps 10] [--rounds 3] [--output docs/results/speech_train_cost.md]

Each variant trains `--steps` steps through the CLI (`stage1_tokenizer.train`) at the demo's CPU
settings (K=64, batch 16, crops of 8192 samples; the adversary from the first step), and its
train_summary.json gives the wall time spent in training steps (evaluation and checkpoints
excluded). The first step also initialises the codebook (k-means) and starts the loader, so each
run trains 1 + `--steps` steps and a step's cost is (time of all - time of the first) / `--steps`
(train_summary.json gives both).
The variants take turns for `--rounds` rounds, so the machine's noise hits each alike;
the table gives each one's median seconds per step and its ratio to recipes/speech.yaml's. With
the training CPU minutes of benchmarks/speech_conversion.py this says what a decoder's steps
cost before it says what they give.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from stage1_tokenizer import train as tokenizer_cli
from stage1_tokenizer.common.files import write_report

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {  # name: (recipe, extra flags)
    "conv, spectral loss only": ("speech.yaml", ["--mel_loss_weight", "0"]),
    "conv, spectral + mel loss (recipes/speech.yaml)": ("speech.yaml", []),
    "conv + discriminators (recipes/speech_adversarial.yaml)": ("speech_adversarial.yaml", ["--adversarial_start_step", "0"]),
    "WaveNet decoder (recipes/speech_wavenet.yaml)": ("speech_wavenet.yaml", []),
}
BASELINE = "conv, spectral + mel loss (recipes/speech.yaml)"


def seconds_per_step(recipe: str, flags: list[str], steps: int, work_dir: Path) -> float:
    """A step's wall time without the first step's one-off work: one run of 1 + `steps` steps."""
    output_dir = work_dir / "run"
    tokenizer_cli.main([
        str(REPO / "recipes" / recipe), *flags, "--max_steps", str(1 + steps), "--eval_every", str(1 + steps), "--eval_limit", "1",
        "--save_every", str(1 + steps), "--keep_checkpoints", "1", "--segment_length", "8192", "--batch_size", "16",
        "--model.codebook_size", "64", "--output_dir", str(output_dir), "--overwrite_output_dir", "true",
    ])  # fmt: skip
    summary = json.loads((output_dir / "train_summary.json").read_text())
    return (summary["seconds_in_steps"] - summary["seconds_in_first_step"]) / steps


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="training steps of each run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each variant")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--output", type=Path, default=None, help="the markdown table (and a .json beside it)")
    args = parser.parse_args(argv)
    argv_used = list(sys.argv[1:] if argv is None else argv)
    if args.steps < 1 or args.rounds < 1:
        raise ValueError(f"--steps {args.steps} and --rounds {args.rounds}: at least 1 step and 1 round are needed.")

    times = {name: [] for name in args.variants}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.rounds):
            for name in args.variants:
                recipe, flags = VARIANTS[name]
                times[name].append(seconds_per_step(recipe, flags, args.steps, Path(work)))
    median = {name: statistics.median(values) for name, values in times.items()}
    reference_name = BASELINE if BASELINE in median else args.variants[0]
    lines = [
        f"Command: `python benchmarks/speech_train_cost.py {' '.join(argv_used)}`",
        "",
        f"{args.steps} training steps after the first, batch 16 crops of 8192 samples, K=64, {torch.get_num_threads()} torch "
        f"thread(s); median of {args.rounds} interleaved runs (range in brackets).",
        "",
        f"| decoder | seconds / step | vs {reference_name} |",
        "|---|---|---|",
    ]
    for name, value in median.items():
        low, high = min(times[name]), max(times[name])
        lines.append(f"| {name} | {value:.2f} ({low:.2f}-{high:.2f}) | {value / median[reference_name]:.1f}x |")
    table = "\n".join(lines)
    print("\n" + table)
    if args.output is not None:
        write_report(args.output, table + "\n", {"command": argv_used, "seconds_per_step": times})
    return {"seconds_per_step": median, "runs": times}


if __name__ == "__main__":
    main()
