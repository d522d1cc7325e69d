"""Encoding a dataset into a code dataset, on one process or many, in memory that does not grow
with the dataset (the library behind `python -m stage1_tokenizer.encode`).

The dataset's rows are cut into shards of `shard_size` consecutive rows; process p of P encodes
shards p, p + P, ... with a DataLoader (worker processes decode), and streams each shard's codes
into its own Arrow file (`datasets`' ArrowWriter) as the batches come. A shard is written under a
temporary name and renamed when complete, inside a work folder beside the output that an
interrupted run finds again: rerun the same command and it keeps the finished shards. When every
shard is there, the main process writes `code_dataset.json` and renames the work folder into
place. The shards, read in order, hold the rows in the dataset's order, whatever the number of
processes: a 2-process encode gives exactly the codes of a 1-process one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from datasets import Array2D, Features, List, Value
from datasets.arrow_writer import ArrowWriter
from torch.utils.data import DataLoader, Dataset, Subset, default_collate
from tqdm.auto import tqdm

from .code_dataset import METADATA_FILE, SHARDS, code_dataset_metadata, code_dtype, load_code_dataset, tokenizer_fingerprint
from .common.files import check_output_dir, publish_directory, write_text_atomic
from .common.training import default_num_workers
from .data.media import SKIPPED, BadFileError, MediaDataset

WORK_SETTINGS = "settings.json"  # in the work folder: what it is encoding (a rerun must match to resume)


def _resolve(dataset, index: int):
    """(the dataset under `dataset`'s Subsets, the row `index` stands for there)."""
    while isinstance(dataset, Subset):
        dataset, index = dataset.dataset, dataset.indices[index]
    return dataset, index


class _Rows(Dataset):
    """Rows start..stop of `dataset`. With on_bad_file="skip", a file that cannot be used is None
    (dropped and counted by `_collate`), never replaced by its neighbour as in training: every
    code row stands for its own input row."""

    def __init__(self, dataset, start: int, stop: int):
        self.dataset, self.start, self.stop = dataset, start, stop

    def __len__(self):
        return self.stop - self.start

    def __getitem__(self, i):
        base, row = _resolve(self.dataset, self.start + i)
        if isinstance(base, MediaDataset) and base.on_bad_file == "skip":
            try:
                return base.load(row)
            except BadFileError:
                return None
        return self.dataset[self.start + i]


def _collate(items):
    """(the batch of the usable items, how many were dropped)."""
    kept = [{k: v for k, v in item.items() if k != SKIPPED} for item in items if item is not None]
    return (default_collate(kept) if kept else {}), len(items) - len(kept)


def _features(model, with_labels: bool) -> Features:
    dtype = np.dtype(code_dtype(model.config.codebook_size)).name
    audio = getattr(model.config, "modality", None) == "audio"
    columns = {}
    for level in range(model.config.num_levels):
        grid = None if audio else tuple(model.config.code_grids[level])
        columns[f"codes_{level}"] = List(Value(dtype)) if audio else Array2D(shape=grid, dtype=dtype)
    if with_labels:
        columns["label"] = Value("int64")
    return Features(columns)


def _inputs(batch: dict) -> torch.Tensor:
    for key in ("pixel_values", "input_values", "codes"):
        if key in batch:
            return batch[key]
    raise KeyError(f"items must hold pixel_values, input_values or codes; got {sorted(batch)}.")


def _labels(batch: dict) -> torch.Tensor | None:
    for key in ("label", "speaker"):
        if key in batch:
            return batch[key]
    return None


@torch.no_grad()
def _encode_batch(model, inputs: torch.Tensor) -> list[torch.Tensor]:
    """Codes per level (top first) of a batch; audio one utterance at a time, each cut to a whole
    number of top-level codes (lengths differ; padding would change the last codes)."""
    if getattr(model.config, "modality", None) != "audio":
        return [codes.cpu() for codes in model.encode(inputs)]
    stride = model.config.total_stride
    usable = inputs.shape[-1] // stride * stride
    if usable == 0:
        raise ValueError(f"an utterance has {inputs.shape[-1]} samples, fewer than one code ({stride}).")
    return [codes.cpu() for codes in model.encode(inputs[..., :usable])]


def encode_to_code_dataset(
    model,
    dataset,
    output_dir: str | Path,
    *,
    id2label: dict | None = None,
    source: str | None = None,
    batch_size: int = 256,
    num_workers: int | None = None,
    shard_size: int = 10_000,
    overwrite: bool = False,
) -> Path:
    """Encodes every row of a map-style `dataset` ({"pixel_values", "label"} images, whole
    {"input_values", "speaker"} utterances, or {"codes", "label"} for a latent VQ-VAE) with
    `model` into the code dataset `output_dir`, on every process of the current Accelerate state.
    Call it on every process. Returns the output folder."""
    state = Accelerator()  # reads `accelerate launch`'s settings (processes, CPU or GPU)
    output_dir = Path(output_dir)
    check_output_dir(output_dir, overwrite)
    if len(dataset) == 0:
        raise ValueError("the dataset to encode is empty: check --split, --limit and the data.")
    audio = getattr(model.config, "modality", None) == "audio"
    if audio:
        batch_size = 1  # utterances of any length, one at a time
    num_workers = default_num_workers(dataset, state.num_processes) if num_workers is None else num_workers
    model = model.to(state.device).eval()
    dtype = code_dtype(model.config.codebook_size)
    first = dataset[0]
    label = _labels(first)
    with_labels = label is not None and int(label) >= 0
    fingerprint = tokenizer_fingerprint(model)
    features = _features(model, with_labels)
    num_shards = math.ceil(len(dataset) / shard_size)
    work = output_dir.with_name(f".{output_dir.name}.encoding")
    settings = {"tokenizer_fingerprint": fingerprint, "num_examples": len(dataset), "shard_size": shard_size,
                "source": source, "features": features.to_dict()}  # fmt: skip
    if state.is_main_process:
        _prepare_work_folder(work, settings)
    state.wait_for_everyone()

    mine = range(state.process_index, num_shards, state.num_processes)
    dropped = 0
    bar = tqdm(total=sum(min(shard_size, len(dataset) - s * shard_size) for s in mine), desc="encode", unit=" rows",
               disable=not state.is_local_main_process)  # fmt: skip
    for shard in mine:
        start, stop = shard * shard_size, min((shard + 1) * shard_size, len(dataset))
        path = work / SHARDS / f"shard-{shard:05d}.arrow"
        if path.is_file():  # finished by an earlier, interrupted run
            bar.update(stop - start)
            continue
        rows = _Rows(dataset, start, stop)
        loader = DataLoader(rows, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        writer = ArrowWriter(features=features, path=str(partial), writer_batch_size=1000)
        try:
            for batch, skipped in loader:
                dropped += skipped
                bar.update(skipped)
                if not batch:
                    continue
                codes = _encode_batch(model, _inputs(batch).to(state.device))
                columns = {f"codes_{level}": [c.numpy().astype(dtype) for c in level_codes] for level, level_codes in enumerate(codes)}
                if with_labels:
                    columns["label"] = _labels(batch).tolist()
                writer.write_batch(columns)
                bar.update(len(codes[0]))
            writer.finalize()
        finally:
            writer.close()
        os.replace(partial, path)
    bar.close()
    dropped = int(state_sum(state, dropped))
    state.wait_for_everyone()
    if state.is_main_process:
        shards = [f"{SHARDS}/shard-{s:05d}.arrow" for s in range(num_shards)]
        total = sum(_rows_in(work / name) for name in shards)
        metadata = code_dataset_metadata(model, total, id2label, source)
        metadata.update({"shards": shards, "bad_files_skipped": dropped})
        write_text_atomic(work / METADATA_FILE, json.dumps(metadata, indent=2))
        (work / WORK_SETTINGS).unlink()
        publish_directory(work, output_dir, overwrite)
    state.wait_for_everyone()
    return output_dir


def state_sum(accelerator: Accelerator, value: int) -> int:
    """`value` summed over the processes."""
    return int(accelerator.reduce(torch.tensor(value, device=accelerator.device), reduction="sum").item())


def _rows_in(path: Path) -> int:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all().num_rows


def _prepare_work_folder(work: Path, settings: dict) -> None:
    """Keeps an interrupted run's work folder if it was encoding the same thing; else starts over."""
    recorded = work / WORK_SETTINGS
    settings = json.loads(json.dumps(settings))  # as JSON reads it back (tuples become lists)
    if work.is_dir():
        try:
            same = json.loads(recorded.read_text()) == settings
        except (OSError, ValueError):
            same = False
        if same:
            return
        if not recorded.is_file():
            raise FileExistsError(f"{work} exists but is not an encoding work folder of vqgen; move it away and rerun.")
        shutil.rmtree(work)
    (work / SHARDS).mkdir(parents=True)
    write_text_atomic(recorded, json.dumps(settings, indent=1))


def encode_latent_codes(latent, codes_dir: str | Path, output_dir: str | Path, *, batch_size: int = 256, overwrite: bool = False) -> Path:
    """The 3-code tuples of a frame tokenizer's code dataset, by a latent VQ-VAE trained on those
    codes, saved as a code dataset of the latent model (its fingerprint, the frames' labels)."""
    from .code_dataset import CodeDataset

    grid_codes, metadata = load_code_dataset(codes_dir)
    if latent.config.input_fingerprint and metadata["tokenizer_fingerprint"] != latent.config.input_fingerprint:
        raise ValueError(
            f"the codes in {codes_dir} were made by tokenizer {metadata['tokenizer_fingerprint'][:12]}, but the latent "
            f"model was trained on the codes of {latent.config.input_fingerprint[:12]}: encode with that tokenizer first."
        )
    items = CodeDataset(grid_codes, metadata["num_levels"] - 1, conditional="label" in grid_codes.column_names)
    return encode_to_code_dataset(
        latent, items, output_dir, id2label=metadata["id2label"], source=metadata.get("dataset"),
        batch_size=batch_size, num_workers=0, overwrite=overwrite,
    )  # fmt: skip
