"""The ImageNet-size data path, measured on an ImageNet-shaped folder: does any cost before the
first batch grow with the dataset, does encoding's memory, and how fast do loading and encoding go?

    python benchmarks/data_scale.py [--sizes 2000 20000] [--output docs/results/data_scale.md]

It writes a folder of N JPEGs (500x375, 100 classes, smooth photographs-like content) for each N
and measures, each in a fresh process so that nothing is cached in memory:
- seconds from constructing the image-folder dataset to its first batch (twice, in two fresh
  processes; the second has the folder's listing in the OS cache), for the 128x128 ImageNet
  recipe's resize;
- the encode command's peak RSS (a small tokenizer of the recipe's shape, 32x32 codes), and the
  memory per additional image between the smallest and largest N;
- encoding images per second with 1 and 2 processes (`accelerate launch`);
- DataLoader images per second with 0, 1 and 2 workers, with and without JPEG draft decoding.
Every figure is a ratio or a rate measured in this one run, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def write_folder(root: Path, count: int, classes: int = 100, seed: int = 0) -> Path:
    """`count` 500x375 JPEGs in `classes` class folders: smooth color fields with texture (about
    the size of ImageNet photos on disk), made once and reused."""
    from PIL import Image

    done = root / ".complete"
    if done.is_file():
        return root
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (count, 12, 16, 3), dtype=np.uint8)
    for i in range(count):
        folder = root / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(small[i]).resize((500, 375), Image.Resampling.BICUBIC)
        texture = rng.integers(-12, 13, (375, 500, 1), dtype=np.int16)
        pixels = np.clip(np.asarray(image, dtype=np.int16) + texture, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:07d}.JPEG", quality=85)
    done.write_text("ok")
    return root


def run_python(code: str, *args) -> dict:
    """Runs `code` in a fresh interpreter; it prints one JSON line last."""
    result = subprocess.run([PYTHON, "-c", code, *map(str, args)], capture_output=True, cwd=REPO, timeout=7200)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.decode()[-3000:])
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


FIRST_BATCH = """
import json, sys, time
import torch
from stage1_tokenizer.data import load_image_folder
start = time.perf_counter()  # the libraries are loaded: from here on, only the dataset's own work
dataset = load_image_folder(sys.argv[1], 128, 3)
built = time.perf_counter()
batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True, num_workers=0)))
print(json.dumps({"construct_s": built - start, "first_batch_s": time.perf_counter() - start, "images": len(dataset)}))
"""

LOADER = """
import json, sys, time
import torch
from stage1_tokenizer.data import load_image_folder
workers, draft, limit = int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
dataset = load_image_folder(sys.argv[1], 128, 3, draft=draft)
subset = torch.utils.data.Subset(dataset, range(limit))
loader = torch.utils.data.DataLoader(subset, batch_size=32, num_workers=workers)
iterator = iter(loader); next(iterator)  # workers started, first batch made
start, count = time.perf_counter(), 0
for batch in iterator:
    count += len(batch["pixel_values"])
print(json.dumps({"images_per_s": count / (time.perf_counter() - start)}))
"""

ENCODE = """
import json, resource, sys, time
start = time.perf_counter()
from stage1_tokenizer.encode import main
main(sys.argv[1:])
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def make_tokenizer(path: Path) -> Path:
    import torch

    from stage1_tokenizer import VQVAEConfig, VQVAEModel

    torch.manual_seed(0)
    VQVAEModel(VQVAEConfig(in_channels=3, image_size=128, hidden_channels=16, code_dim=8, codebook_size=512, quantizer="vq")).save_pretrained(path)
    return path


def encode_flags(tokenizer: Path, folder: Path, output: Path, limit: int | None = None) -> list[str]:
    flags = ["--tokenizer", str(tokenizer), "--dataset", str(folder), "--split", "train", "--output_dir", str(output),
             "--batch_size", "64", "--shard_size", "1000", "--overwrite_output_dir"]  # fmt: skip
    return flags + (["--limit", str(limit)] if limit else [])


def encode_two_processes(tokenizer: Path, folder: Path, output: Path, limit: int) -> float:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    command = [PYTHON, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29571",
               "-m", "stage1_tokenizer.encode", *encode_flags(tokenizer, folder, output, limit), "--num_workers", "1"]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, cwd=REPO, env=env, timeout=7200)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.decode()[-3000:])
    return time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000], help="dataset sizes, smallest first")
    parser.add_argument("--loader-images", type=int, default=1000, help="images each loader measurement reads")
    parser.add_argument("--encode-images", type=int, default=2000, help="images of the 1- vs 2-process encoding rates")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the JPEG folders go (default: a temporary folder)")
    parser.add_argument("--output", type=Path, default=None, help="also write the tables (markdown) here")
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="vqgen-data-scale-"))
    tokenizer = make_tokenizer(work / "tokenizer")
    rows, lines = {}, []
    for size in args.sizes:
        folder = write_folder(work / f"images-{size}", size)
        cold = run_python(FIRST_BATCH, folder)
        warm = run_python(FIRST_BATCH, folder)
        encode = run_python(ENCODE, *encode_flags(tokenizer, folder, work / f"codes-{size}"), "--num_workers", "2")
        rows[size] = {"cold": cold, "warm": warm, "encode": encode}
        print(f"{size}: {rows[size]}", file=sys.stderr)
    small, large = args.sizes[0], args.sizes[-1]
    per_image_kb = (rows[large]["encode"]["peak_rss_kb"] - rows[small]["encode"]["peak_rss_kb"]) / (large - small)
    loader = {}
    folder = work / f"images-{small}"
    for workers in (0, 1, 2):
        for draft in (True, False):
            loader[workers, draft] = run_python(LOADER, folder, workers, int(draft), args.loader_images)["images_per_s"]
    one = run_python(ENCODE, *encode_flags(tokenizer, folder, work / "codes-one", args.encode_images), "--num_workers", "2")
    one_rate = args.encode_images / one["seconds"]
    two_rate = args.encode_images / encode_two_processes(tokenizer, folder, work / "codes-two", args.encode_images)

    lines += [
        f"ImageNet-shaped folders (500x375 JPEGs, 100 classes), resized to 128x128; {os.cpu_count()} cores; "
        "each figure from a fresh process in this run.",
        "",
        "| images | construct -> first batch, first process (s) | second process (s) | second vs the smallest | encode peak RSS (MB) |",
        "|---|---|---|---|---|",
    ]
    for size in args.sizes:
        r = rows[size]
        lines.append(
            f"| {size:,} | {r['cold']['first_batch_s']:.2f} | {r['warm']['first_batch_s']:.2f} | "
            f"{r['warm']['first_batch_s'] / rows[small]['warm']['first_batch_s']:.2f}x | {r['encode']['peak_rss_kb'] / 1024:.0f} |"
        )
    lines += [
        "",
        f"Encode memory per additional image between {small:,} and {large:,}: {per_image_kb:.2f} KB "
        f"(a 32x32 code grid of K=512 is {32 * 32 * 2 / 1024:.0f} KB as uint16).",
        "",
        "| step | images / s | vs the first row |",
        "|---|---|---|",
    ]
    base = loader[0, False]
    for workers in (0, 1, 2):
        for draft in (False, True):
            lines.append(f"| loader, {workers} worker{'s' if workers != 1 else ''}, {'draft' if draft else 'full'} JPEG decoding "
                         f"| {loader[workers, draft]:.0f} | {loader[workers, draft] / base:.2f}x |")  # fmt: skip
    lines += [
        f"| encode, 1 process (2 loader workers) | {one_rate:.0f} | {one_rate / base:.2f}x |",
        f"| encode, 2 processes (1 loader worker each) | {two_rate:.0f} | {two_rate / base:.2f}x |",
    ]
    table = "\n".join(lines)
    print(table)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(f"`python benchmarks/data_scale.py {' '.join(argv or sys.argv[1:])}`\n\n{table}\n")
    return {"rows": rows, "per_image_kb": per_image_kb, "loader": {f"{w}-{d}": v for (w, d), v in loader.items()},
            "encode_1": one_rate, "encode_2": two_rate}  # fmt: skip


if __name__ == "__main__":
    main()
