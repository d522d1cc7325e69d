"""Encode a dataset with a trained tokenizer into a code dataset on disk (stage two's input).

    python -m stage1_tokenizer.encode --tokenizer runs/fashion_mnist/model --dataset fashion_mnist \
        --split train --output_dir codes/fashion_mnist-train

    python -m stage1_tokenizer.encode --tokenizer runs/speech/model --dataset speech --split train \
        --output_dir codes/speech-train

The result is a `datasets` dataset saved with `save_to_disk`: one column per level, `codes_0`
(top level) ... `codes_{L-1}` (bottom), each a nested list (h, w) of ints (audio: a list of the
utterance's codes, as long as it is), plus `label` when the source has labels (audio: the speaker
id). `code_dataset.json` beside it records the tokenizer's fingerprint (SHA-256 of its config and
the weights that determine codes), its code grids (audio: samples per code), codebook size and
labels (audio: speaker names); `load_code_dataset(path, tokenizer)` refuses codes whose
fingerprint differs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig, HfArgumentParser

from .modeling_latent_vqvae import LatentVQVAEConfig, LatentVQVAEModel
from .modeling_vqvae import VQVAEModel
from .training import publish_directory

METADATA_FILE = "code_dataset.json"
# Buffers that only steer training (usage counters, EMA statistics, the annealing step): they do
# not change which codes an image gets, so they stay out of the fingerprint.
_TRAINING_ONLY = ("steps_unused", "initialized", "ema_count", "ema_sum", ".step")


def tokenizer_fingerprint(model: VQVAEModel) -> str:
    # the config's own fields: not where it was loaded from (`_name_or_path`) or which version wrote it
    fields = {k: v for k, v in model.config.to_dict().items() if not k.startswith("_") and k != "transformers_version"}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        if name.endswith(_TRAINING_ONLY):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def encode_dataset(model: VQVAEModel, dataset, batch_size: int = 256) -> datasets.Dataset:
    """Codes of every item of a map-style dataset of {"pixel_values", "label"} (label -1: none),
    or for an audio tokenizer of {"input_values", "speaker"} utterances."""
    model.eval()
    if model.config.modality == "audio":
        return _encode_utterances(model, dataset)
    device = next(model.parameters()).device
    columns: dict[str, list] = {f"codes_{level}": [] for level in range(model.config.num_levels)}
    labels: list[int] = []
    for batch in tqdm(DataLoader(dataset, batch_size=batch_size), desc="encode"):
        codes = model.encode(batch["pixel_values"].to(device))
        for level, level_codes in enumerate(codes):
            columns[f"codes_{level}"].extend(level_codes.cpu().numpy().astype(np.int32))
        labels.extend(batch["label"].tolist())
    if labels and min(labels) >= 0:
        columns["label"] = labels
    return datasets.Dataset.from_dict(columns)


def _encode_utterances(model: VQVAEModel, dataset) -> datasets.Dataset:
    """One utterance at a time (their lengths differ; padding would change the last codes), each
    cut to a whole number of top-level codes."""
    device, stride = next(model.parameters()).device, model.config.total_stride
    columns: dict[str, list] = {f"codes_{level}": [] for level in range(model.config.num_levels)}
    speakers: list[int] = []
    for index in tqdm(range(len(dataset)), desc="encode", unit="utt"):
        item = dataset[index]
        waveform = item["input_values"]
        usable = waveform.shape[-1] // stride * stride
        if usable == 0:
            raise ValueError(f"utterance {index} has {waveform.shape[-1]} samples, fewer than one code ({stride}).")
        for level, codes in enumerate(model.encode(waveform[None, :, :usable].to(device))):
            columns[f"codes_{level}"].append(codes[0].cpu().numpy().astype(np.int32))
        speakers.append(int(item["speaker"]))
    if speakers and min(speakers) >= 0:
        columns["label"] = speakers
    return datasets.Dataset.from_dict(columns)


def save_code_dataset(
    codes: datasets.Dataset, model: VQVAEModel, output_dir: str | Path, id2label=None, source: str | None = None
) -> Path:
    """Writes the dataset and its metadata under a temporary name, then renames it into place.
    `source` names the data that was encoded (kept for model cards)."""
    output_dir = Path(output_dir)
    tmp = output_dir.with_name(f".{output_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    codes.save_to_disk(str(tmp))
    config = model.config
    audio = getattr(config, "modality", None) == "audio"
    metadata = {
        "tokenizer_fingerprint": tokenizer_fingerprint(model),
        "modality": getattr(config, "modality", "codes"),  # "codes": a latent VQ-VAE's, over another's codes
        "code_grids": None if audio else config.code_grids,
        "code_strides": getattr(config, "code_strides", None),
        "codebook_size": model.config.codebook_size,
        "num_levels": model.config.num_levels,
        "id2label": {int(k): v for k, v in (id2label or {}).items()},
        "num_examples": len(codes),
        "dataset": source,
    }
    (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return publish_directory(tmp, output_dir)


def load_code_dataset(path: str | Path, tokenizer: VQVAEModel | None = None) -> tuple[datasets.Dataset, dict]:
    """(codes, metadata); with `tokenizer`, refuses codes another tokenizer made."""
    path = Path(path)
    if not (path / METADATA_FILE).is_file():
        raise FileNotFoundError(
            f"{path} is not a code dataset (no {METADATA_FILE}); make one with `python -m stage1_tokenizer.encode`."
        )
    metadata = json.loads((path / METADATA_FILE).read_text())
    if tokenizer is not None:
        expected = tokenizer_fingerprint(tokenizer)
        if metadata["tokenizer_fingerprint"] != expected:
            raise ValueError(
                f"the codes in {path} were made by tokenizer {metadata['tokenizer_fingerprint'][:12]}, but the "
                f"paired tokenizer is {expected[:12]}: re-encode the data with this tokenizer "
                "(python -m stage1_tokenizer.encode) or pair the codes with the tokenizer that made them."
            )
    return datasets.load_from_disk(str(path)), metadata


@dataclass
class EncodeArguments:
    tokenizer: str = field(metadata={"help": "A save_pretrained folder, e.g. runs/fashion_mnist/model."})
    output_dir: str = field(metadata={"help": "Where the code dataset is written."})
    dataset: str = field(default="fashion_mnist", metadata={"help": "As stage1_tokenizer.train's --dataset ('speech' for audio)."})
    split: str = field(default="train", metadata={"help": "'train' or 'test' (hub datasets: any split)."})
    limit: int | None = field(default=None, metadata={"help": "Encode only the first N images (utterances)."})
    speech_sentences: int | None = field(default=None, metadata={"help": "'speech': sentences of the split (default 200 / 30)."})
    batch_size: int = field(default=256)
    codes: str | None = field(
        default=None, metadata={"help": "With a latent VQ-VAE as --tokenizer: the code dataset of the tokenizer below it."}
    )


def encode_latent_codes(latent: LatentVQVAEModel, codes_dir: str | Path, output_dir: str | Path, batch_size: int = 256) -> Path:
    """The 3-code tuples of a frame tokenizer's code dataset, by a latent VQ-VAE trained on those
    codes, saved as a code dataset of the latent model (its fingerprint, the frames' labels)."""
    grid_codes, metadata = load_code_dataset(codes_dir)
    if latent.config.input_fingerprint and metadata["tokenizer_fingerprint"] != latent.config.input_fingerprint:
        raise ValueError(
            f"the codes in {codes_dir} were made by tokenizer {metadata['tokenizer_fingerprint'][:12]}, but the latent "
            f"model was trained on the codes of {latent.config.input_fingerprint[:12]}: encode with that tokenizer first."
        )
    latent.eval()
    grids = grid_codes.with_format("torch")[:][f"codes_{metadata['num_levels'] - 1}"].long()
    tuples = torch.cat([latent.encode(grids[start : start + batch_size])[0] for start in range(0, len(grids), batch_size)])
    columns = {"codes_0": tuples.numpy().astype(np.int32)}
    if "label" in grid_codes.column_names:
        columns["label"] = grid_codes["label"]
    return save_code_dataset(datasets.Dataset.from_dict(columns), latent, output_dir, metadata["id2label"], source=metadata.get("dataset"))


def main(argv=None) -> Path:
    from torch.utils.data import Subset

    from .train import (
        DataArguments,
        ModelArguments,
        build_audio_sources,
        build_datasets,
    )

    (args,) = HfArgumentParser(EncodeArguments).parse_args_into_dataclasses(argv)
    if AutoConfig.from_pretrained(args.tokenizer).model_type == LatentVQVAEConfig.model_type:
        if args.codes is None:
            raise ValueError("a latent VQ-VAE encodes codes, not data: pass --codes, the code dataset of the tokenizer below it.")
        path = encode_latent_codes(LatentVQVAEModel.from_pretrained(args.tokenizer), args.codes, args.output_dir, args.batch_size)
        print(f"wrote the {LatentVQVAEModel.__name__} codes of {args.codes} to {path}")
        return path
    model = VQVAEModel.from_pretrained(args.tokenizer)
    config = model.config
    fields = [name for name in ModelArguments.__dataclass_fields__ if hasattr(config, name) and name != "quantizer_options"]
    model_args = ModelArguments(**{name: getattr(config, name) for name in fields}, speaker_conditioning=bool(config.speakers))
    data = DataArguments(dataset=args.dataset, eval_split=args.split, train_split=args.split, eval_limit=None,
                         speech_sentences=args.speech_sentences)  # fmt: skip
    if args.dataset == "speech" and config.speakers:  # the built-in voices the tokenizer knows
        data.speech_speakers = ",".join(config.speakers)
    if config.modality == "audio":  # whole utterances, not training crops
        split = "train" if args.split == "train" else "test"
        train, held_out = build_audio_sources(data, model_args, split=split)
        source = train if split == "train" else held_out
        if config.speakers and source.speakers != config.speakers:
            raise ValueError(
                f"{args.dataset} names the speakers {source.speakers}, but the tokenizer was trained with "
                f"{config.speakers}: encode data whose speaker ids mean what they meant in training."
            )
        id2label = dict(enumerate(source.speakers or []))
    else:
        train, held_out = build_datasets(data, model_args)
        source = train if args.split == "train" else held_out
        inner = getattr(source, "dataset", source)
        names = getattr(inner, "class_names", None)  # frame sources name their maps
        id2label = getattr(inner, "id2label", None) or (dict(enumerate(names)) if names else None)
    if args.limit is not None:
        source = Subset(source, range(min(args.limit, len(source))))
    codes = encode_dataset(model, source, args.batch_size)
    path = save_code_dataset(codes, model, args.output_dir, id2label, source=args.dataset)
    layout = f"{config.code_strides} samples per code" if config.modality == "audio" else f"codes {config.code_grids}"
    print(f"wrote {len(codes)} examples of {layout} to {path}")
    return path


if __name__ == "__main__":
    main()
