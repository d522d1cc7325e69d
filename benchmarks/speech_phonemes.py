"""Do the speech codes align with phonemes? The VQ-VAE paper's analysis (van den Oord et al. 2017,
section 4.3) on our corpus: map each code to the phoneme it most often covers, and count how often
that guess is right on held-out speech.

    nice -n 19 python benchmarks/speech_phonemes.py [--steps 2000] [--seeds 0] [--threads 1] \
        [--output docs/results/speech_phonemes.md] [--picture docs/images/speech-phoneme-confusion.png]

The paper: latents of a speech VQ-VAE trained without any linguistic supervision (K=128) predict
the phoneme of 49.3% of the frames, against 7.2% for the most frequent phoneme. Here:

- Tokenizers: recipes/speech.yaml (16 kHz, six stride-2 steps: one code per 64 samples, conv
  decoder with the multi-resolution STFT and mel losses (`--mel-loss-weight 0`: the STFT loss
  alone), speaker-conditioned, vq-ema with dead-code restarts), shrunk to fit the budget (hidden and code_dim `--hidden`, `--steps` steps of
  `--batch-size` crops of `--segment-length` samples), trained through the CLI
  (`stage1_tokenizer.train.main`) on the `--train-sentences` train sentences in all ten voices.
  Configurations (`--configs`): K=64, 128 and 512 at one level, and two levels with K=128 each
  (bottom: one code per 64 samples; top: per 128).
- Labels: `stage1_tokenizer.evaluation.phonemes`: espeak-ng's own phoneme events, moved through
  the corpus's trimming and resampling, give every frame of `hop` samples the phoneme that covers
  most of it (`frame_labels`, as `dataset_frame_labels` does; here the phonemes are synthesized
  once per utterance and framed at every hop).
- Codes: every utterance is encoded whole, zero-padded at the end to a whole number of top-level
  frames; only the frames that hold at least one sample of the utterance (ceil(T / hop)) are
  scored, the padding's codes are dropped.
- Mapping: code -> its most frequent phoneme over the frames of the first `--fit-sentences` train
  sentences (all voices); codes never seen there map to the train majority phoneme. Accuracy: over
  every frame of every held-out utterance (the test split: unseen sentences, the same voices).
  Majority baseline: the most frequent train phoneme, scored on held-out. For two levels the
  bottom codes, the top codes (at the top's hop) and the pair (bottom code, code of the top frame
  above it) as one symbol are scored apart. "Fitted on held-out": the mapping fitted on the
  held-out frames themselves, an upper bound and not a result.
- Control: an untrained tokenizer of the same configuration and seed whose codebooks are k-means
  initialised on its own (random) encoder's outputs for one batch of training crops, as training's
  first step does; no gradient step.
- `--picture`: the row-normalised confusion (true vs predicted phoneme, held-out) of the first
  seed's one-level K=128 tokenizer over the `--confusion-phonemes` most frequent phonemes.

Writes the markdown table to `--output` (and a .json beside it); runs go to `--work-dir`.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from stage1_tokenizer import VQVAEModel
from stage1_tokenizer import train as train_cli
from stage1_tokenizer.common.files import write_report
from stage1_tokenizer.data import SyntheticSpeech
from stage1_tokenizer.evaluation.phonemes import Phoneme, corpus_utterance, frame_labels

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "speech.yaml"
# key: (row label, K, levels)
CONFIGS = {
    "k64": ("one level, K=64", 64, 1),
    "k128": ("one level, K=128", 128, 1),
    "k512": ("one level, K=512", 512, 1),
    "two-level-k128": ("two levels, K=128 each", 128, 2),
}
CONFUSION_CONFIG = "k128"
PAPER = {"K": 128, "accuracy": 0.493, "majority_baseline": 0.072}


class LabelledUtterance(NamedTuple):  # a NamedTuple, not a dataclass: tests import this script from its file
    """A corpus utterance, whole, with its phonemes in samples."""

    waveform: torch.Tensor  # (1, T) in [-1, 1], as the dataset gives it
    speaker: int
    phonemes: list[Phoneme]


def labelled_utterances(
    dataset: SyntheticSpeech, limit: int | None = None, num_workers: int | None = None
) -> list[LabelledUtterance]:
    """The first `limit` items (all by default) of a `SyntheticSpeech` dataset with their phonemes,
    synthesized again through libespeak-ng (one process each, `num_workers` at a time)."""
    count = len(dataset) if limit is None else min(limit, len(dataset))

    def label(index: int) -> LabelledUtterance:
        item = dataset[index]
        speaker = int(item["speaker"])
        synthesis = corpus_utterance(dataset.texts[index], dataset.speakers[speaker], dataset.sampling_rate)
        length = item["input_values"].shape[-1]
        if synthesis.waveform.size != length:  # the labels would drift against the stored audio
            raise RuntimeError(
                f"item {index}: the labelled utterance has {synthesis.waveform.size} samples, the stored one {length}."
            )
        return LabelledUtterance(item["input_values"], speaker, synthesis.phonemes)

    with ThreadPoolExecutor(max_workers=num_workers or os.cpu_count() or 1) as pool:
        return list(tqdm(pool.map(label, range(count)), total=count, desc=f"Phonemes of {dataset.split}", unit="utt"))


@torch.no_grad()
def code_streams(model: VQVAEModel, waveform: torch.Tensor) -> dict[str, tuple[np.ndarray, int]]:
    """Symbol streams of one whole utterance (1, T): {name: (one symbol per frame, hop in samples)}.
    One level: "codes". Two levels: "bottom", "top" and "bottom+top" (bottom code * K + the code of
    the top frame that covers it, at the bottom's hop). The waveform is zero-padded at the end to a
    multiple of the total stride, so the streams may run up to one top frame past the utterance."""
    config = model.config
    length = waveform.shape[-1]
    padded = F.pad(waveform, (0, -length % config.total_stride))
    codes = [level[0].numpy() for level in model.encode(padded.unsqueeze(0))]  # top level first
    hops = config.code_strides
    if len(codes) == 1:
        return {"codes": (codes[0], hops[0])}
    top, bottom = codes
    top_under_bottom = np.repeat(top, hops[0] // hops[1])[: bottom.size]
    return {
        "bottom": (bottom, hops[1]),
        "top": (top, hops[0]),
        "bottom+top": (bottom * config.codebook_size + top_under_bottom, hops[1]),
    }


def aligned_frames(
    symbols: np.ndarray, hop: int, utterance: LabelledUtterance, total_stride: int
) -> tuple[np.ndarray, list[str]]:
    """(symbols, labels) of the frames that hold at least one sample of the utterance: ceil(T / hop)
    of them; the rest of the stream covers only the zero padding and is dropped."""
    length = utterance.waveform.shape[-1]
    num_frames = math.ceil(length / hop)
    padding_frames = symbols.size - num_frames
    if not 0 <= padding_frames < max(total_stride // hop, 1):
        raise ValueError(f"{symbols.size} codes of hop {hop} for {length} samples (padded to a multiple of {total_stride}).")
    return symbols[:num_frames], frame_labels(utterance.phonemes, num_frames, hop)


def collect(model: VQVAEModel, utterances: list[LabelledUtterance]) -> dict[str, dict]:
    """{stream name: {"symbols": all frames' symbols, "labels": their phonemes, "hop": samples}}."""
    streams: dict[str, dict] = {}
    for utterance in utterances:
        for name, (symbols, hop) in code_streams(model, utterance.waveform).items():
            kept, labels = aligned_frames(symbols, hop, utterance, model.config.total_stride)
            stream = streams.setdefault(name, {"symbols": [], "labels": [], "hop": hop})
            stream["symbols"].append(kept)
            stream["labels"] += labels
    for stream in streams.values():
        stream["symbols"] = np.concatenate(stream["symbols"])
    return streams


def phoneme_accuracy(
    train_symbols: np.ndarray, train_labels: list[str], test_symbols: np.ndarray, test_labels: list[str]
) -> dict:
    """Fits symbol -> most frequent phoneme on train frames (ties: the first phoneme in sorted
    order; unseen symbols: the train majority phoneme) and scores it on test frames."""
    phonemes = sorted(set(train_labels) | set(test_labels))
    index = {phoneme: i for i, phoneme in enumerate(phonemes)}
    train_y = np.array([index[p] for p in train_labels])
    test_y = np.array([index[p] for p in test_labels])
    _, symbol_ids = np.unique(np.concatenate([train_symbols, test_symbols]), return_inverse=True)
    train_ids, test_ids = symbol_ids[: train_symbols.size], symbol_ids[train_symbols.size :]
    num_symbols = int(symbol_ids.max()) + 1

    def counts(ids, labels):
        table = np.zeros((num_symbols, len(phonemes)), dtype=np.int64)
        np.add.at(table, (ids, labels), 1)
        return table

    train_counts = counts(train_ids, train_y)
    majority = int(np.bincount(train_y, minlength=len(phonemes)).argmax())
    seen = train_counts.sum(1) > 0
    mapping = np.where(seen, train_counts.argmax(1), majority)
    predicted = mapping[test_ids]
    held_out_mapping = counts(test_ids, test_y).argmax(1)
    return {
        "accuracy": float((predicted == test_y).mean()),
        "majority_baseline": float((test_y == majority).mean()),
        "majority_phoneme": phonemes[majority],
        "held_out_fit_accuracy": float((held_out_mapping[test_ids] == test_y).mean()),
        "codes_used": int(np.unique(test_ids).size),
        "unseen_frames": float((~seen[test_ids]).mean()),
        "train_frames": int(train_symbols.size),
        "test_frames": int(test_symbols.size),
        "predicted": [phonemes[i] for i in predicted],
    }


def analyze(model: VQVAEModel, fit: list[LabelledUtterance], held_out: list[LabelledUtterance]) -> dict[str, dict]:
    """The phoneme accuracy of every code stream of `model` (see `code_streams`), the mapping fitted
    on `fit` and scored on `held_out`. Each result also holds "hop_ms", "labels" (held-out, per
    frame) and "predicted"; no training happens here."""
    model.eval()
    fit_streams, held_out_streams = collect(model, fit), collect(model, held_out)
    results = {}
    for name, test in held_out_streams.items():
        train = fit_streams[name]
        result = phoneme_accuracy(train["symbols"], train["labels"], test["symbols"], test["labels"])
        result.update(hop=test["hop"], hop_ms=1000 * test["hop"] / model.config.sampling_rate, labels=test["labels"])
        results[name] = result
    return results


def untrained_control(config, seed: int, crops: torch.Tensor, speakers: torch.Tensor) -> VQVAEModel:
    """An untrained tokenizer of `config` whose codebooks are k-means initialised on its own
    encoder's outputs for `crops`, as the first training step does (a random codebook would leave
    most codes unused and make the control trivially weak); no gradient step."""
    torch.manual_seed(seed)
    model = VQVAEModel(config).train()
    with torch.no_grad():
        model(crops, speakers if config.speakers else None)
    return model.eval()


def middle_crops(utterances: list[LabelledUtterance], count: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` crops of `length` samples from the middle of utterances spread over the list."""
    chosen = [utterances[i * len(utterances) // count] for i in range(count)]
    crops = []
    for utterance in chosen:
        wave = F.pad(utterance.waveform, (0, max(length - utterance.waveform.shape[-1], 0)))
        start = (wave.shape[-1] - length) // 2
        crops.append(wave[:, start : start + length])
    return torch.stack(crops), torch.tensor([u.speaker for u in chosen])


def train_tokenizer(key: str, seed: int, args) -> tuple[VQVAEModel, dict, float]:
    """Trains one configuration through the CLI; (model, its last held-out evaluation, seconds)."""
    _, codebook_size, levels = CONFIGS[key]
    output_dir = args.work_dir / f"{key}-seed{seed}-steps{args.steps}"
    argv = [
        str(RECIPE), "--model.sampling_rate", str(args.sampling_rate), "--model.codebook_size", str(codebook_size),
        "--model.num_levels", str(levels), "--model.hidden_channels", str(args.hidden), "--model.code_dim", str(args.hidden),
        "--speech_sentences", str(args.train_sentences), "--segment_length", str(args.segment_length),
        "--eval_segment_length", str(4 * args.segment_length), "--eval_limit", str(args.eval_limit), "--num_examples", "1",
        "--batch_size", str(args.batch_size), "--learning_rate", str(args.learning_rate), "--max_steps", str(args.steps),
        "--eval_every", str(args.steps), "--save_every", str(args.steps), "--keep_checkpoints", "1",
        "--log_every", str(max(args.steps // 10, 1)), "--seed", str(seed), "--output_dir", str(output_dir),
        "--overwrite_output_dir", "true",
        *(["--mel_loss_weight", str(args.mel_loss_weight)] if args.mel_loss_weight is not None else []),
    ]  # fmt: skip
    start = time.perf_counter()
    model, metrics = train_cli.main(argv)
    return model.eval(), metrics, time.perf_counter() - start


def mean_sd(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


STREAM_LEVEL = {"codes": "-", "bottom": "bottom", "top": "top", "bottom+top": "bottom + top (pair)"}


def table(runs: list[dict], args, seconds: float, sizes: dict) -> str:
    seeds = sorted({run["seed"] for run in runs})
    lines = [
        f"Command: `nice -n 19 python benchmarks/speech_phonemes.py {' '.join(args.argv)}`".rstrip(),
        "",
        f"SyntheticSpeech at {args.sampling_rate} Hz, ten voices. Tokenizers: recipes/speech.yaml with hidden = code_dim = "
        f"{args.hidden}, "
        + ("the recipe's mel-loss weight" if args.mel_loss_weight is None else f"mel-loss weight {args.mel_loss_weight}")
        + f", {args.steps} steps of {args.batch_size} crops of {args.segment_length} samples, lr {args.learning_rate}, "
        f"trained on {args.train_sentences} sentences x 10 voices. Mapping code -> phoneme fitted on {sizes['fit_utterances']} train "
        f"utterances ({sizes['fit_frames']} frames at hop 64), scored on all {sizes['held_out_utterances']} held-out utterances "
        f"({sizes['held_out_frames']} frames at hop 64; unseen sentences, the same voices); {sizes['phonemes']} distinct phonemes "
        f"(espeak-ng mnemonics, pauses included). Seeds {seeds}"
        + (" (mean ± sd)" if len(seeds) > 1 else " (one seed: no spread measured)")
        + f". Wall time {seconds / 60:.1f} min with {torch.get_num_threads()} torch thread(s) on {os.cpu_count()} cores shared with other jobs.",
        "",
        (
            "| configuration | K | level | hop (ms) | codes used (held-out) | held-out accuracy | majority baseline | "
            "untrained control | fitted on held-out (upper bound) | log-mel distance |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in args.configs:
        label, codebook_size, _ = CONFIGS[key]
        config_runs = [run for run in runs if run["config"] == key]
        if not config_runs:
            continue
        for stream, first in config_runs[0]["trained"].items():
            trained = [run["trained"][stream] for run in config_runs]
            untrained = [run["untrained"][stream] for run in config_runs]
            symbols = f"{codebook_size}x{codebook_size}" if stream == "bottom+top" else str(codebook_size)
            used = statistics.fmean(r["codes_used"] for r in trained)
            lines.append(
                f"| {label} | {symbols} | {STREAM_LEVEL[stream]} | {first['hop_ms']:g} | {used:.0f} | "
                f"{mean_sd([r['accuracy'] for r in trained])}% | {mean_sd([r['majority_baseline'] for r in trained])}% | "
                f"{mean_sd([r['accuracy'] for r in untrained])}% | {mean_sd([r['held_out_fit_accuracy'] for r in trained])}% | "
                f"{mean_sd([run['metrics']['log_mel_distance'] for run in config_runs], 1, 3)} |"
            )
    lines.append(
        f"| *the paper (VCTK, their model and labels; not our corpus)* | {PAPER['K']} | - | - | - | {100 * PAPER['accuracy']:.1f}% | "
        f"{100 * PAPER['majority_baseline']:.1f}% | - | - | - |"
    )
    majority = Counter(r["trained"][s]["majority_phoneme"] for r in runs for s in r["trained"])
    lines += [
        "",
        (
            f"Majority phoneme (train): {', '.join(repr(p) for p in majority)}. Codes used: distinct symbols over the held-out "
            "frames. Untrained control: same configuration and seed, codebooks k-means initialised on the random encoder's "
            "outputs, mapping fitted and scored the same way. Log-mel distance: the CLI's held-out reconstruction score of the "
            "trained tokenizer (lower is better)."
        ),
    ]
    return "\n".join(lines) + "\n"


def plot_confusion(true: list[str], predicted: list[str], path: Path, top: int = 30, title: str = "") -> None:
    """Row-normalised confusion of the `top` most frequent true phonemes against the predicted
    ones (predictions outside them pooled as "other")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [phoneme for phoneme, _ in Counter(true).most_common(top)]
    columns = names + ["other"]
    row, column = {p: i for i, p in enumerate(names)}, {p: i for i, p in enumerate(columns)}
    matrix = np.zeros((len(names), len(columns)))
    for t, p in zip(true, predicted):
        if t in row:
            matrix[row[t], column.get(p, len(names))] += 1
    matrix /= np.maximum(matrix.sum(1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(11, 9.5))
    image = axes.imshow(matrix, cmap="viridis", vmin=0, vmax=1)
    axes.set_xticks(range(len(columns)), columns, rotation=90, fontsize=8)
    axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.set_xlabel("predicted phoneme (the code's most frequent train phoneme)")
    axes.set_ylabel("true phoneme (espeak-ng), most frequent first")
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.04, label="share of the true phoneme's held-out frames")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--hidden", type=int, default=64, help="hidden channels and code_dim")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--segment-length", type=int, default=4096, help="samples per training crop")
    parser.add_argument("--learning-rate", type=float, default=0.002)
    parser.add_argument("--mel-loss-weight", type=float, default=None, help="override the recipe's (0: spectral loss alone)")
    parser.add_argument("--sampling-rate", type=int, default=16000)
    # One thread by default: on a 2-core machine shared with any other job, torch's two OpenMP threads
    # wait on each other and ran 35x slower than one (measured: 7.2 against 0.19 s per training step).
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default, one per core)")
    parser.add_argument(
        "--train-sentences", type=int, default=200, help="train sentences (x 10 voices) the tokenizers learn from"
    )
    parser.add_argument(
        "--fit-sentences", type=int, default=40, help="the first N of them (x 10 voices) fit the code -> phoneme map"
    )
    parser.add_argument(
        "--test-sentences", type=int, default=30, help="held-out sentences (x 10 voices), the whole test split by default"
    )
    parser.add_argument("--eval-limit", type=int, default=32, help="held-out crops of the CLI's own evaluation")
    parser.add_argument("--confusion-phonemes", type=int, default=30)
    parser.add_argument("--work-dir", type=Path, default=Path("outputs/speech_phonemes"))
    parser.add_argument("--output", type=Path, default=None, help="the markdown table (and a .json beside it)")
    parser.add_argument("--picture", type=Path, default=None, help="PNG of the K=128 one-level confusion")
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()

    train_split = SyntheticSpeech("train", args.sampling_rate, num_sentences=args.train_sentences)
    test_split = SyntheticSpeech("test", args.sampling_rate, num_sentences=args.test_sentences)
    voices = len(train_split.speakers)
    fit = labelled_utterances(train_split, limit=min(args.fit_sentences, args.train_sentences) * voices)
    held_out = labelled_utterances(test_split)
    crops, crop_speakers = middle_crops(fit, args.batch_size, args.segment_length)

    runs, confusion = [], None
    for seed in args.seeds:
        for key in args.configs:
            model, metrics, train_seconds = train_tokenizer(key, seed, args)
            trained = analyze(model, fit, held_out)
            untrained = analyze(untrained_control(model.config, seed, crops, crop_speakers), fit, held_out)
            if key == CONFUSION_CONFIG and confusion is None:
                confusion = (trained["codes"]["labels"], trained["codes"]["predicted"], trained["codes"]["accuracy"], seed)
            strip = ("labels", "predicted")
            runs.append({
                "config": key, "seed": seed, "train_seconds": train_seconds,
                "metrics": {name: value for name, value in metrics.items() if isinstance(value, (int, float))},
                "trained": {name: {k: v for k, v in r.items() if k not in strip} for name, r in trained.items()},
                "untrained": {name: {k: v for k, v in r.items() if k not in strip} for name, r in untrained.items()},
            })  # fmt: skip
            summary = ", ".join(
                f"{name} {r['accuracy']:.1%} (untrained {untrained[name]['accuracy']:.1%})" for name, r in trained.items()
            )
            print(f"{key} seed {seed}: {summary}; majority {next(iter(trained.values()))['majority_baseline']:.1%}")

    seconds = time.perf_counter() - start
    bottom = next(iter(runs[0]["trained"].values()))  # "codes" or "bottom": frames at the bottom hop
    sizes = {
        "fit_utterances": len(fit), "held_out_utterances": len(held_out), "fit_frames": bottom["train_frames"],
        "held_out_frames": bottom["test_frames"], "phonemes": len({p.phoneme for u in fit + held_out for p in u.phonemes}),
    }  # fmt: skip
    report = table(runs, args, seconds, sizes)
    print("\n" + report)
    if args.output:
        details = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "sizes": sizes,
                   "seconds": seconds, "paper": PAPER, "runs": runs}  # fmt: skip
        write_report(args.output, report, details)
    if args.picture and confusion is not None:
        labels, predicted, accuracy, seed = confusion
        title = (f"{CONFIGS[CONFUSION_CONFIG][0]}, seed {seed}: held-out frames, {accuracy:.1%} right; "
                 "rows: true phoneme, row-normalised")  # fmt: skip
        plot_confusion(labels, predicted, args.picture, args.confusion_phonemes, title)
    return runs


if __name__ == "__main__":
    main()
