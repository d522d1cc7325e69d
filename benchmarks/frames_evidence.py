"""Do the latent VQ-VAE's 3 codes (27 bits) carry the map of a first-person frame? Measured on
held-out ViZDoom episodes, over seeds.

    python benchmarks/frames_evidence.py --work-dir /tmp/frames_evidence --output docs/results/frames_evidence.md \
        [--seeds 0 1 2] [--tokenizer-steps 600] [--latent-steps 600] [--held-out-episodes 5]

For each seed, trains the frame tokenizer (recipes/vizdoom.yaml, 84x84x3 -> 21x21 codes, K=512,
64 channels wide as in scripts/demo_frames.py) and the latent VQ-VAE over its codes
(recipes/vizdoom_latent.yaml, 21x21 codes -> 3 codes of K=512), both through their CLIs with
`--seed`, into `--work-dir`/seed-N/. Then takes the 21x21 codes of the train split (10 episodes of
100 frames per map; the encode CLI's, which the latent VQ-VAE trained on), encodes a held-out split
of `--held-out-episodes` episodes per map (`VizDoomFrames("test", 6 x 100 x episodes)`: other
episodes than any the models trained on), and measures, on held-out frames unless said otherwise:

- tuple entropy: the empirical entropy of the 3-code tuples, in bits. With N frames it cannot
  exceed log2 N (every tuple distinct), whatever the 27 bits allow; both caps are reported, and the
  same on the train split;
- per-position usage: for each of the 3 positions, the codes used (of 512) and their perplexity;
- tuple sharing: P(two frames have the identical tuple) for pairs of the same map from different
  episodes (the evidence), of the same map and episode (consecutive frames of one walk, for
  contrast), and of different maps (what any pair would give if tuples ignored the map);
- nearest-neighbour map classifiers fitted on the train frames and scored on the held-out ones:
  from the 3 codes by Hamming distance over the 3 positions (the headline; the codes as a prior
  sees them), from the 3 codes by the Euclidean distance of their codebook vectors, from the
  21x21 codes by Hamming distance over the 441 positions, and from 8x8 thumbnails of the pixels
  (Euclidean), against chance (1/6) and always answering the train split's majority map. Every
  train frame at the smallest distance votes with its map; a tied vote goes to the lowest map index.

Prints markdown tables of mean ± sd over the seeds; `--output` writes them with the command to a
markdown file and every per-seed number to a .json beside it. `--reuse-models` skips training a
seed whose models are already in the work dir (to re-run the analysis). Deterministic per seed.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModel

from stage1_tokenizer import encode as encode_cli
from stage1_tokenizer import train as tokenizer_cli
from stage1_tokenizer import train_latent as latent_cli
from stage1_tokenizer.code_dataset import load_code_dataset
from stage1_tokenizer.common.files import write_report
from stage1_tokenizer.data import VizDoomFrames
from stage1_tokenizer.data.vizdoom import EPISODE_FRAMES

REPO = Path(__file__).resolve().parent.parent
THUMBNAIL_SIZE = 8


# -- training ----------------------------------------------------------------------------------------
def train_models(run_dir: Path, seed: int, args: argparse.Namespace) -> tuple[Path, Path, float]:
    """The frame tokenizer and the latent VQ-VAE of one seed, through their CLIs: their model folders
    and the minutes training and encoding took (read back when `--reuse-models` finds them)."""
    tokenizer_dir, latent_dir = run_dir / "tokenizer" / "model", run_dir / "latent" / "model"
    timing = run_dir / "train_minutes.json"  # written last: its presence means both models are complete
    if args.reuse_models and timing.is_file():
        return tokenizer_dir, latent_dir, json.loads(timing.read_text())["minutes"]
    start = time.perf_counter()
    hidden, steps = str(args.hidden_channels), str(args.tokenizer_steps)
    tokenizer_cli.main([
        str(REPO / "recipes" / "vizdoom.yaml"), "--model.hidden_channels", hidden, "--max_steps", steps, "--eval_every", steps,
        "--save_every", steps, "--eval_limit", "300", "--seed", str(seed), "--output_dir", str(run_dir / "tokenizer"),
        "--overwrite_output_dir",
    ])  # fmt: skip
    for split in ("train", "test"):  # the latent CLI trains and evaluates on code datasets
        encode_cli.main(["--tokenizer", str(tokenizer_dir), "--dataset", "vizdoom", "--split", split,
                         "--output_dir", str(run_dir / f"codes-{split}"), "--overwrite_output_dir"])  # fmt: skip
    steps = str(args.latent_steps)
    latent_cli.main([
        str(REPO / "recipes" / "vizdoom_latent.yaml"), "--tokenizer", str(tokenizer_dir),
        "--train_codes", str(run_dir / "codes-train"), "--eval_codes", str(run_dir / "codes-test"),
        "--model.hidden_channels", hidden, "--max_steps", steps, "--eval_every", steps, "--save_every", steps,
        "--seed", str(seed), "--output_dir", str(run_dir / "latent"), "--overwrite_output_dir",
    ])  # fmt: skip
    minutes = (time.perf_counter() - start) / 60
    timing.write_text(json.dumps({"minutes": minutes}))
    return tokenizer_dir, latent_dir, minutes


# -- codes of a split ----------------------------------------------------------------------------------
@torch.no_grad()
def split_codes(latent, grids: torch.Tensor, maps, episodes=None, thumbnails: torch.Tensor | None = None) -> dict:
    """A split as the analysis reads it, from its 21x21 codes (N, 21, 21): its 3-code tuples (N, 3),
    maps (N,), episodes within the map (N,) when known, and pixel thumbnails when given."""
    grids = torch.as_tensor(grids).long()
    tuples = torch.cat([latent.encode(batch)[0].flatten(1) for batch in grids.split(1000)])
    return {
        "grids": grids,
        "tuples": tuples,
        "maps": torch.as_tensor(np.asarray(maps)).long(),
        "episodes": None if episodes is None else torch.as_tensor(np.asarray(episodes)).long(),
        "thumbnails": thumbnails,
    }


def batches_of_frames(dataset: VizDoomFrames, batch_size: int, desc: str | None = None):
    """The dataset's frames as float (B, 3, H, W) batches, in order."""
    for start in tqdm(range(0, len(dataset), batch_size), desc=desc, unit="batch", disable=desc is None):
        yield torch.stack([dataset[i]["pixel_values"] for i in range(start, min(start + batch_size, len(dataset)))])


def thumbnails_of(dataset: VizDoomFrames, batch_size: int = 500) -> torch.Tensor:
    """8x8 average-pooled frames, flattened (N, 192): the pixel reference's features."""
    batches = batches_of_frames(dataset, batch_size)
    return torch.cat([F.adaptive_avg_pool2d(frames, THUMBNAIL_SIZE).flatten(1) for frames in batches])


@torch.no_grad()
def encode_grids(tokenizer, dataset: VizDoomFrames, batch_size: int = 200, desc: str | None = None) -> torch.Tensor:
    """The frame tokenizer's 21x21 codes of every frame, (N, 21, 21)."""
    return torch.cat([tokenizer.encode(frames)[-1] for frames in batches_of_frames(dataset, batch_size, desc)])


def load_grids(code_dataset: Path, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(21x21 codes, maps) of a code dataset the encode CLI wrote with this tokenizer."""
    codes, _ = load_code_dataset(code_dataset, tokenizer)
    columns = codes.with_format("torch")[:]  # whole columns at once, not row by row
    return columns["codes_0"].long(), columns["label"].long()


# -- measures --------------------------------------------------------------------------------------------
def entropy_bits(counts: torch.Tensor) -> float:
    """Empirical entropy, in bits, of a distribution given by its counts."""
    p = counts[counts > 0].double() / counts.sum()
    return float(-(p * p.log2()).sum()) + 0.0  # + 0.0: no "-0.00" for a single outcome


def tuple_entropy(tuples: torch.Tensor) -> dict:
    _, counts = torch.unique(tuples, dim=0, return_counts=True)
    return {"bits": entropy_bits(counts), "max_bits": math.log2(len(tuples)), "distinct": len(counts), "frames": len(tuples)}


def position_usage(tuples: torch.Tensor, codebook_size: int) -> list[dict]:
    """Per position of the tuple: the fraction of the codebook used, and the perplexity 2^H."""
    usage = []
    for position in tuples.T:
        counts = torch.bincount(position, minlength=codebook_size)
        usage.append({"used": int((counts > 0).sum()) / codebook_size, "perplexity": 2 ** entropy_bits(counts)})
    return usage


def sharing_rates(split: dict) -> dict:
    """P(identical 3-code tuple) over pairs of distinct frames, by the kind of pair."""
    _, ids = torch.unique(split["tuples"], dim=0, return_inverse=True)
    identical = ids[:, None] == ids[None]
    same_map = split["maps"][:, None] == split["maps"][None]
    same_episode = same_map & (split["episodes"][:, None] == split["episodes"][None])
    distinct = ~torch.eye(len(ids), dtype=torch.bool)
    kinds = {
        "same_map_other_episode": same_map & ~same_episode,
        "same_map_same_episode": same_episode & distinct,
        "different_maps": ~same_map,
    }
    rates = {}
    for name, pairs in kinds.items():
        count = int(pairs.sum()) // 2  # each unordered pair twice
        rates[name] = {"pairs": count, "identical": float(identical[pairs].double().mean()) if count else float("nan")}
    return rates


def vote_of_nearest(distances: torch.Tensor, train_maps: torch.Tensor, num_maps: int) -> torch.Tensor:
    """(Q, T) distances -> a map per query: every train frame at the smallest distance votes with its
    map; a tied vote goes to the lowest map index (argmax takes the first)."""
    nearest = distances == distances.min(1, keepdim=True).values
    votes = torch.zeros(len(distances), num_maps, dtype=torch.long)
    votes.scatter_add_(1, train_maps.expand_as(nearest), nearest.long())
    return votes.argmax(1)


def hamming_classifier(train_codes, train_maps, query_codes, num_maps: int, chunk: int = 500, progress=False) -> torch.Tensor:
    """Nearest-neighbour maps by Hamming distance over code positions, (N, P) codes (ids < 2^15)."""
    train_by_position = train_codes.to(torch.int16).T.contiguous()  # (P, T): one row per position
    predicted = []
    chunks = range(0, len(query_codes), chunk)
    for start in tqdm(chunks, desc=f"nearest neighbours over {train_codes.shape[1]} codes", disable=not progress):
        queries = query_codes[start : start + chunk].to(torch.int16)
        matches = torch.zeros(len(queries), len(train_codes), dtype=torch.int16)
        for position, train_column in enumerate(train_by_position):  # P passes over (chunk, T): no (chunk, T, P) tensor
            matches += queries[:, position, None] == train_column[None]
        predicted.append(vote_of_nearest(-matches, train_maps, num_maps))
    return torch.cat(predicted)


def codebook_classifier(latent, train_tuples, train_maps, query_tuples, num_maps: int) -> torch.Tensor:
    """Nearest-neighbour maps by the squared Euclidean distance of the tuples' codebook vectors, summed
    over the positions from one table of codeword distances: identical tuples are exactly 0 apart."""
    codebook = latent.quantizer.codebook.detach().double()
    table = torch.cdist(codebook, codebook, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    table.fill_diagonal_(0)
    distances = sum(table[query_tuples[:, p, None], train_tuples[None, :, p]] for p in range(train_tuples.shape[1]))
    return vote_of_nearest(distances, train_maps, num_maps)


def classifier_accuracies(latent, train: dict, held_out: dict, num_maps: int, progress=False) -> dict:
    def accuracy(predicted):
        return float((predicted == held_out["maps"]).double().mean())

    train_maps = train["maps"]
    majority = int(torch.bincount(train_maps, minlength=num_maps).argmax())
    accuracies = {
        "three_codes_hamming": accuracy(hamming_classifier(train["tuples"], train_maps, held_out["tuples"], num_maps)),
        "three_codes_codebook": accuracy(codebook_classifier(latent, train["tuples"], train_maps, held_out["tuples"], num_maps)),
        "grid_codes_hamming": accuracy(
            hamming_classifier(train["grids"].flatten(1), train_maps, held_out["grids"].flatten(1), num_maps, progress=progress)
        ),
        "chance": 1 / num_maps,
        "majority_map": accuracy(torch.full_like(held_out["maps"], majority)),
    }
    if train["thumbnails"] is not None and held_out["thumbnails"] is not None:
        distances = torch.cdist(held_out["thumbnails"].double(), train["thumbnails"].double())
        accuracies["thumbnails_8x8"] = accuracy(vote_of_nearest(distances, train_maps, num_maps))
    return accuracies


def analyse(latent, train: dict, held_out: dict, num_maps: int = 6, progress=False) -> dict:
    """Every measure of one seed's models: `train` and `held_out` are `split_codes` (the held-out
    split with its episodes)."""
    seen_in_train = set(map(tuple, train["tuples"].tolist()))
    held_out_seen = [t in seen_in_train for t in map(tuple, held_out["tuples"].tolist())]
    return {
        "held_out_entropy": tuple_entropy(held_out["tuples"]),
        "train_entropy": tuple_entropy(train["tuples"]),
        "held_out_tuples_seen_in_train": sum(held_out_seen) / len(held_out_seen),
        "position_usage": position_usage(held_out["tuples"], latent.config.codebook_size),
        "sharing": sharing_rates(held_out),
        "accuracy": classifier_accuracies(latent, train, held_out, num_maps, progress),
        "bits_per_frame": latent.bits_per_frame,
    }


# -- report -----------------------------------------------------------------------------------------------
def mean_sd(values: list[float], digits: int, scale: float = 1.0, unit: str = "") -> str:
    values = [v * scale for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}{unit}"


ACCURACY_ROWS = {  # key: (features, distance)
    "three_codes_hamming": ("3 codes (27 bits) — headline", "Hamming over 3 positions"),
    "three_codes_codebook": ("3 codes (27 bits)", "Euclidean over their codebook vectors"),
    "grid_codes_hamming": ("21x21 codes (3969 bits)", "Hamming over 441 positions"),
    "thumbnails_8x8": ("8x8 pixel thumbnails (reference)", "Euclidean"),
    "majority_map": ("none: the train split's majority map", "-"),
    "chance": ("chance", "1/6"),
}


def report(results: list[dict], settings: dict) -> str:
    def column(get):
        return [get(r) for r in results]

    seeds = ", ".join(str(r["seed"]) for r in results)
    held, train = results[0]["held_out_entropy"], results[0]["train_entropy"]
    lines = [
        f"Command: `{settings['command']}`",
        "",
        f"Frame tokenizer {settings['tokenizer_steps']} steps and latent VQ-VAE {settings['latent_steps']} steps, both "
        f"{settings['hidden_channels']} channels wide, per seed ({seeds}); mean ± sd over the seeds. Train split: "
        f"{train['frames']} frames (10 episodes per map); held out: {held['frames']} frames, "
        f"{settings['held_out_episodes']} episodes of up to {EPISODE_FRAMES} frames per map, none of them trained on. "
        f"Minutes per seed, training (both models and the CLI's encoding) + analysis: "
        + ", ".join(f"{r['minutes']['training']:.1f} + {r['minutes']['analysis']:.1f}" for r in results)
        + f"; {settings['minutes']:.1f} minutes in all, {settings['threads']} threads.",
        "",
        "3-code tuples (27 bits per frame). With N frames the empirical entropy cannot exceed log2 N, "
        "so the 27 bits cannot show here; the cap is the measure's, not the model's:",
        "",
        "| split | frames N | tuple entropy (bits) | cap log2 N | distinct tuples |",
        "|---|---|---|---|---|",
    ]
    for name, key in (("held out", "held_out_entropy"), ("train", "train_entropy")):
        lines.append(
            f"| {name} | {results[0][key]['frames']} | {mean_sd(column(lambda r: r[key]['bits']), 2)} | "
            f"{results[0][key]['max_bits']:.2f} | {mean_sd(column(lambda r: r[key]['distinct']), 0)} |"
        )
    seen = mean_sd(column(lambda r: r["held_out_tuples_seen_in_train"]), 1, 100, "%")
    lines += [
        "",
        f"Held-out frames whose tuple occurs in the train split: {seen}.",
        "",
        "Codebook usage per position, held out (K=512):",
        "",
        "| position | codes used | of 512 | perplexity |",
        "|---|---|---|---|",
    ]
    for position in range(len(results[0]["position_usage"])):
        used = column(lambda r: r["position_usage"][position]["used"])
        lines.append(
            f"| {position + 1} | {mean_sd(used, 0, 512)} | {mean_sd(used, 1, 100, '%')} | "
            f"{mean_sd(column(lambda r: r['position_usage'][position]['perplexity']), 1)} |"
        )
    lines += [
        "",
        "P(two held-out frames have the identical 3-code tuple), by pair:",
        "",
        "| pairs | pairs per seed | P(identical tuple) |",
        "|---|---|---|",
    ]
    for key, name in (
        ("same_map_other_episode", "same map, different episodes (the evidence)"),
        ("same_map_same_episode", "same map, same episode (contrast: one walk)"),
        ("different_maps", "different maps"),
    ):
        identical = mean_sd(column(lambda r: r["sharing"][key]["identical"]), 3, 100, "%")
        lines.append(f"| {name} | {results[0]['sharing'][key]['pairs']} | {identical} |")
    lines += [
        "",
        "Nearest-neighbour map classifiers, fitted on the train frames, scored on the held-out frames (every train "
        "frame at the smallest distance votes; a tied vote goes to the lowest map index):",
        "",
        "| from | distance | held-out accuracy |",
        "|---|---|---|",
    ]
    for key, (features, distance) in ACCURACY_ROWS.items():
        if key in results[0]["accuracy"]:
            lines.append(f"| {features} | {distance} | {mean_sd(column(lambda r: r['accuracy'][key]), 1, 100, '%')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, required=True, help="where each seed's models and code datasets go")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tokenizer-steps", type=int, default=600)
    parser.add_argument("--latent-steps", type=int, default=600)
    parser.add_argument("--hidden-channels", type=int, default=64, help="of both models (the recipes' 128 is for GPUs)")
    parser.add_argument("--held-out-episodes", type=int, default=5, help="held-out episodes per map")
    parser.add_argument("--reuse-models", action="store_true", help="analyse a seed's models already in --work-dir")
    parser.add_argument("--output", type=Path, default=None, help="the markdown tables (and a .json of every seed beside them)")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()

    train_frames = VizDoomFrames("train")
    held_out_frames = VizDoomFrames("test", num_frames=len(train_frames.class_names) * EPISODE_FRAMES * args.held_out_episodes)
    num_maps = len(train_frames.class_names)
    train_thumbnails, held_out_thumbnails = thumbnails_of(train_frames), thumbnails_of(held_out_frames)
    results = []
    for seed in args.seeds:
        print(f"seed {seed}: training the frame tokenizer and the latent VQ-VAE", flush=True)
        tokenizer_dir, latent_dir, train_minutes = train_models(args.work_dir / f"seed-{seed}", seed, args)
        analysis_start = time.perf_counter()
        tokenizer, latent = AutoModel.from_pretrained(tokenizer_dir).eval(), AutoModel.from_pretrained(latent_dir).eval()
        # The train split's 21x21 codes are those the latent VQ-VAE trained on, written by the encode CLI.
        train_grids, train_maps = load_grids(args.work_dir / f"seed-{seed}" / "codes-train", tokenizer)
        train = split_codes(latent, train_grids, train_maps, thumbnails=train_thumbnails)
        held_out_grids = encode_grids(tokenizer, held_out_frames, desc=f"seed {seed}: encoding the held-out frames")
        held_out = split_codes(latent, held_out_grids, held_out_frames.labels, held_out_frames.episodes, held_out_thumbnails)
        result = {"seed": seed, **analyse(latent, train, held_out, num_maps, progress=True)}
        result["minutes"] = {"training": train_minutes, "analysis": (time.perf_counter() - analysis_start) / 60}
        accuracy, bits = result["accuracy"], result["held_out_entropy"]["bits"]
        print(f"seed {seed}: held-out tuple entropy {bits:.2f} bits; map accuracy from 3 codes "
              f"{accuracy['three_codes_hamming']:.1%}, from 21x21 codes {accuracy['grid_codes_hamming']:.1%}")  # fmt: skip
        results.append(result)

    settings = {
        "command": shlex.join(["python", "benchmarks/frames_evidence.py", *argv]),
        "seeds": args.seeds, "tokenizer_steps": args.tokenizer_steps, "latent_steps": args.latent_steps,
        "hidden_channels": args.hidden_channels, "held_out_episodes": args.held_out_episodes,
        "train_frames": len(train_frames), "held_out_frames": len(held_out_frames), "maps": train_frames.class_names,
        "minutes": (time.perf_counter() - start) / 60, "threads": torch.get_num_threads(),
    }  # fmt: skip
    table = report(results, settings)
    print("\n" + table)
    if args.output is not None:
        write_report(args.output, table, {"settings": settings, "seeds": results})
        print(f"wrote {args.output} and {args.output.with_suffix('.json')}")
    return {"settings": settings, "seeds": results}


if __name__ == "__main__":
    main()
