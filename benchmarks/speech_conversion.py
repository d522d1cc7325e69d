"""Does speech keep its words through the codes, and take on the target's voice? Reconstructions
and voice conversions of held-out speech, judged by two judges independent of our models.

    python benchmarks/speech_conversion.py [--recipes recipes/speech.yaml] [--seeds 0 1 2] \
        [--steps 3000] [--codebook-size 64] [--wer-sentences 2] [--output docs/results/speech_conversion.md]

For each recipe and seed, a speech tokenizer trains through the CLI (`stage1_tokenizer.train`)
with the demo's CPU settings (scripts/demo_speech.py: K=`--codebook-size`, crops of
`--segment-length` samples, `--steps` steps; the recipe's mel-loss weight unless
`--mel-loss-weight` is given: 0 gives the spectral loss alone, as before the recipe had one),
then every held-out utterance of the corpus (the test split: 30 unseen sentences x 10 voices) is
encoded whole and decoded once in every voice: in its own voice that is its reconstruction, in
the nine others a voice conversion.

- Identity: `SpeakerClassifier` (nearest class mean of mel statistics, fitted on the train
  split's originals) names the voice of every original (how good the judge is), every
  reconstruction (the ceiling: how often the judge still hears the source after the codes) and
  every conversion (a confusion matrix target x judged; as the target, as the source). Chance is
  1 in 10. The issue's goal: conversions judged as the target at least 3x chance, as the source
  at most chance.
- Content: PocketSphinx constrained to the corpus's grammar (`SpeechRecognizer.for_corpus`), on
  the first `--wer-sentences` held-out sentences in all ten voices: word error rate of the
  originals, of their reconstructions and of their conversions into voice (source + 5) mod 10.
  The default, 2 sentences (20 utterances), keeps the cost down: on unintelligible speech the
  grammar's wide search takes about 15 s per utterance (0.3 s on the originals).
  Goals: reconstructions within 1.25x the originals' WER, conversions within 1.5x.
- Real speech: the five LibriVox recordings of Debian's pocketsphinx-testdata (a man reading a
  novel; no voice of the corpus), converted into each of `--real-voices`, transcribed by
  PocketSphinx's general English model (no noise floor), beside the recordings' own WER.
- Cost: the training's CPU time (this process and its data workers), to compare recipes by what
  a CPU minute buys.

Writes the markdown table to `--output` (a .json of every figure beside it, the confusion as PNG
with `--picture`); runs go to `--work-dir`, reused with `--reuse`. Seeds can run in separate
processes (one `--seeds` and `--output` each, e.g. in parallel on one thread each); `--merge
A.json B.json ...`, with the same settings, then makes their table without training.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from stage1_tokenizer import VQVAEModel
from stage1_tokenizer import train as tokenizer_cli
from stage1_tokenizer.common.files import write_report
from stage1_tokenizer.data import SYNTHETIC_SPEAKERS, SyntheticSpeech
from stage1_tokenizer.evaluation.speech_recognizer import SpeechRecognizer, real_recordings
from stage1_tokenizer.evaluation.voice_conversion import (
    corpus_speaker_judge,
    judge_conversions,
    real_recording_wer,
    tokenizer_converter,
)

REPO = Path(__file__).resolve().parent.parent
SAMPLING_RATE = 16000  # the recipes'


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children (data workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def train_tokenizer(recipe: Path, seed: int, args) -> tuple[VQVAEModel, float]:
    """The demo's tokenizer from `recipe` and `seed`; returns it and the training's CPU seconds
    (None when an earlier run was reused)."""
    output_dir = args.work_dir / f"{recipe.stem}-seed{seed}"
    if args.reuse and (output_dir / "model").is_dir():
        summary = json.loads((output_dir / "cost.json").read_text()) if (output_dir / "cost.json").exists() else {}
        return VQVAEModel.from_pretrained(output_dir / "model").eval(), summary.get("train_cpu_seconds")
    steps = str(args.steps)
    start = cpu_seconds()
    model, _ = tokenizer_cli.main([
        str(recipe), "--max_steps", steps, "--eval_every", steps, "--save_every", steps, "--keep_checkpoints", "1",
        "--segment_length", str(args.segment_length), "--model.codebook_size", str(args.codebook_size),
        *(["--mel_loss_weight", str(args.mel_loss_weight)] if args.mel_loss_weight is not None else []),
        *(["--model.speaker_conditioning", args.speaker_conditioning] if args.speaker_conditioning else []),
        "--seed", str(seed), "--output_dir", str(output_dir), "--overwrite_output_dir", "true",
    ])  # fmt: skip
    seconds = cpu_seconds() - start
    (output_dir / "cost.json").write_text(json.dumps({"train_cpu_seconds": seconds}))
    return model.eval(), seconds


def evaluate_seed(model: VQVAEModel, test: SyntheticSpeech, judge, recognizer, recordings, args) -> dict:
    convert = tokenizer_converter(model)
    report = judge_conversions(convert, test, judge, recognizer, wer_sentences=args.wer_sentences)
    voices = [test.speakers.index(name) for name in args.real_voices]
    report["real"] = real_recording_wer(convert, recordings, voices, SAMPLING_RATE)
    return report


def mean_sd(values: list[float], scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    if len(values) == 1:
        return f"{values[0] * scale:.{digits}f}{unit}"
    return f"{statistics.mean(values) * scale:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}{unit}"


def table(results: dict, args, argv_used: list[str], speakers: list[str]) -> str:
    first = next(iter(results.values()))[0]  # the judges' own figures do not depend on the run
    chance = first["chance"]
    lines = [
        f"Command: `python benchmarks/speech_conversion.py {' '.join(argv_used)}`",
        "",
        f"Held-out corpus: {first['utterances']} utterances (30 unseen sentences x {len(speakers)} voices), each decoded "
        f"in its own voice (reconstruction) and in the {len(speakers) - 1} others (conversions). Speaker judge: chance "
        f"{chance:.0%}, originals named right {first['judge_on_originals']:.1%}. WER (grammar-constrained PocketSphinx) "
        f"on {first['wer_utterances']} of them: originals {first['wer_originals']:.3f}, conversions into voice "
        f"(source + {len(speakers) // 2}) mod {len(speakers)}. Real speech: the five LibriVox recordings "
        f"of pocketsphinx-testdata (general English model): originals {first['real']['originals']:.3f}. Mean ± sd over "
        f"seeds {' '.join(map(str, args.seeds))}; {args.steps} steps, K={args.codebook_size}, crops of "
        f"{args.segment_length} samples"
        + (f", mel-loss weight {args.mel_loss_weight}" if args.mel_loss_weight is not None else ", the recipe's mel-loss weight")
        + (f", speaker conditioning {args.speaker_conditioning}" if args.speaker_conditioning else "")
        + ".",
        "",
        "| recipe | train CPU min | reconstructions judged as source (ceiling) | conversions judged as target | "
        "as source | WER reconstructions | WER conversions | WER / originals' (recon, conv) | real speech converted: WER |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for recipe, runs in results.items():
        minutes = [r["train_cpu_seconds"] / 60 for r in runs if r["train_cpu_seconds"] is not None]

        def of(field, scale=1.0, digits=3, unit=""):
            return mean_sd([r[field] for r in runs], scale, digits, unit)

        ratios = [mean_sd([r[f"wer_{kind}"] / r["wer_originals"] for r in runs]) + "x" for kind in ("reconstructions", "conversions")]
        real = ", ".join(
            f"{voice} {mean_sd([r['real']['conversions'][i] for r in runs])}" for i, voice in enumerate(args.real_voices)
        )
        lines.append(
            f"| {recipe} | {mean_sd(minutes, digits=1) if minutes else '-'} | {of('reconstructions_judged_as_source', 100, 1, '%')} | "
            f"{of('conversions_judged_as_target', 100, 1, '%')} | {of('conversions_judged_as_source', 100, 1, '%')} | "
            f"{of('wer_reconstructions')} | {of('wer_conversions')} | {', '.join(ratios)} | {real} |"
        )
    lines += ["", "Goals (issue 18): WER at most 1.25x the originals' (reconstructions) and 1.5x (conversions); conversions "
              f"judged as the target at least 3x chance ({3 * chance:.0%}), as the source at most chance ({chance:.0%}).", ""]  # fmt: skip
    for recipe, runs in results.items():
        confusion = torch.tensor([r["conversion_confusion"] for r in runs]).mean(0)
        lines += [
            f"Conversions of {recipe}, judged (rows: the voice decoded as; columns: the voice the judge names; % of "
            f"that row's conversions, mean over seeds):",
            "",
            "| decoded as \\ judged | " + " | ".join(speakers) + " |",
            "|---|" + "---|" * len(speakers),
        ]
        lines += [f"| {name} | " + " | ".join(f"{100 * v:.0f}" for v in row) + " |" for name, row in zip(speakers, confusion.tolist())]
        lines.append("")
    return "\n".join(lines)


def plot_confusion(confusion: torch.Tensor, speakers: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 6))
    image = axis.imshow(100 * confusion.numpy(), cmap="viridis", vmin=0, vmax=100)
    axis.set_xticks(range(len(speakers)), speakers, rotation=60, ha="right")
    axis.set_yticks(range(len(speakers)), speakers)
    axis.set_xlabel("voice the judge names")
    axis.set_ylabel("voice decoded as (conversion target)")
    axis.set_title(title)
    figure.colorbar(image, label="% of conversions")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", type=Path, nargs="+", default=[REPO / "recipes" / "speech.yaml"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--codebook-size", type=int, default=64)
    parser.add_argument("--segment-length", type=int, default=8192)
    parser.add_argument("--mel-loss-weight", type=float, default=None, help="override the recipe's (0: spectral loss alone)")
    parser.add_argument("--speaker-conditioning", choices=["input", "every_block"], default=None,
                        help="override the recipe's: the speaker embedding as decoder input channels, or also in every block")
    parser.add_argument("--wer-sentences", type=int, default=2, help="held-out sentences (x 10 voices) scored for WER")
    parser.add_argument("--real-voices", nargs="+", default=["us-male", "gb-female"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--work-dir", type=Path, default=Path("outputs/speech_conversion"))
    parser.add_argument("--reuse", action="store_true", help="reuse tokenizers already trained in --work-dir")
    parser.add_argument("--output", type=Path, default=None, help="the markdown table (and a .json beside it)")
    parser.add_argument("--picture", type=Path, default=None, help="PNG of the first recipe's conversion confusion")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="no training: the table of the runs in these --output JSONs (seeds run in separate processes, "
                        "with the settings given here)")
    args = parser.parse_args(argv)
    argv_used = list(sys.argv[1:] if argv is None else argv)
    if args.merge:
        return merge(parser, args, argv_used)
    missing = [str(recipe) for recipe in args.recipes if not recipe.is_file()]
    if missing:
        raise FileNotFoundError(f"recipes not found: {missing}; pass paths such as recipes/speech.yaml.")
    if args.threads:
        torch.set_num_threads(args.threads)

    test = SyntheticSpeech("test", SAMPLING_RATE)
    unknown = [name for name in args.real_voices if name not in test.speakers]
    if unknown:
        raise ValueError(f"--real-voices {unknown} are not voices of the corpus; choose from {test.speakers}.")
    judge = corpus_speaker_judge(SyntheticSpeech("train", SAMPLING_RATE))
    recognizer, recordings = SpeechRecognizer.for_corpus(SAMPLING_RATE), real_recordings(SAMPLING_RATE)

    results = {}
    for recipe in args.recipes:
        results[recipe.stem] = []
        for seed in args.seeds:
            model, seconds = train_tokenizer(recipe, seed, args)
            run = {"seed": seed, "train_cpu_seconds": seconds, **evaluate_seed(model, test, judge, recognizer, recordings, args)}
            results[recipe.stem].append(run)
            print(f"{recipe.stem} seed {seed}: recon judged as source {run['reconstructions_judged_as_source']:.1%}; conversions "
                  f"as target {run['conversions_judged_as_target']:.1%}, as source {run['conversions_judged_as_source']:.1%}; WER "
                  f"recon {run['wer_reconstructions']:.3f}, conv {run['wer_conversions']:.3f}; real {run['real']['conversions']}", flush=True)  # fmt: skip

    write(results, args, argv_used, test.speakers)
    return results


SETTINGS = ("recipes", "steps", "codebook_size", "segment_length", "mel_loss_weight", "speaker_conditioning", "wer_sentences", "real_voices")


def merge(parser, args, argv_used) -> dict:
    """The runs of earlier --output JSONs in one table; each must have been made with this
    command's settings (SETTINGS), and no seed may appear twice."""
    results = {}
    for path in args.merge:
        payload = json.loads(path.read_text())
        earlier = parser.parse_args(payload["argv"])
        for name in SETTINGS:
            if getattr(earlier, name) != getattr(args, name):
                raise ValueError(f"{path} was run with {name}={getattr(earlier, name)!r}, this command has "
                                 f"{getattr(args, name)!r}: pass the runs' own settings to merge them.")  # fmt: skip
        for recipe, runs in payload["results"].items():
            results.setdefault(recipe, []).extend(runs)
    for recipe, runs in results.items():
        seeds = [run["seed"] for run in runs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{recipe}: seeds {sorted(seeds)} appear more than once in {[str(p) for p in args.merge]}.")
        runs.sort(key=lambda run: run["seed"])
    args.seeds = [run["seed"] for run in next(iter(results.values()))]
    write(results, args, argv_used, [voice[0] for voice in SYNTHETIC_SPEAKERS])  # the corpus's voices, in its order
    return results


def write(results: dict, args, argv_used: list[str], speakers: list[str]) -> None:
    """Prints the table; writes it (and a JSON of every run) to --output, the confusion to --picture."""
    report = table(results, args, argv_used, speakers)
    print("\n" + report)
    if args.output is not None:
        write_report(args.output, report, {"argv": argv_used, "results": results})
        print(f"wrote {args.output} and {args.output.with_suffix('.json')}")
    if args.picture is not None:
        first = args.recipes[0].stem
        confusion = torch.tensor([r["conversion_confusion"] for r in results[first]]).mean(0)
        plot_confusion(confusion, speakers, args.picture, f"{first}: voice conversions, mean over seeds")


if __name__ == "__main__":
    main()
