"""Check every file of an image or audio dataset once, with worker processes, and cache the list of
unusable ones by the dataset's fingerprint.

    python -m stage1_tokenizer.data.check --dataset data/my_images        # a local folder of images
    python -m stage1_tokenizer.data.check --dataset ILSVRC/imagenet-1k --split train --num_workers 16
    python -m stage1_tokenizer.data.check --dataset data/voices --modality audio

Training never scans a dataset up front: an unusable file is handled where it is read
(`--on_bad_file`). This command is for knowing before: it prints how many files cannot be used,
and names them. Its result, cached under `$VQGEN_CACHE/checks/<fingerprint>.json`, is read by every
later `ImageDataset` / `AudioDataset` of the same data, which then skip the listed rows without
trying to decode them (the same items as without the check, only sooner).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..common.files import write_text_atomic
from .audio import AudioDataset, load_audio_folder, load_hub_audio_dataset
from .cache import cache_root
from .images import ImageDataset, load_hub_image_dataset, load_image_folder
from .media import BadFileError, MediaDataset


def check_path(dataset: MediaDataset) -> Path:
    return cache_root() / "checks" / f"{dataset.fingerprint}.json"


class _Probe(torch.utils.data.Dataset):
    """Row i -> (i, None) if usable, else (i, the reason)."""

    def __init__(self, dataset: MediaDataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, row):
        try:
            self.dataset.load(row)
        except BadFileError as error:
            return row, str(error)
        return row, None


def check_dataset(dataset: MediaDataset, num_workers: int = 0) -> dict:
    """Reads every row of `dataset`, writes the cached result and returns it:
    {"fingerprint", "num_rows", "bad_rows": [[row, reason], ...]}."""
    loader = torch.utils.data.DataLoader(_Probe(dataset), batch_size=None, num_workers=num_workers)
    bad = [[row, reason] for row, reason in tqdm(loader, total=len(dataset), desc="checking", unit=" files") if reason]
    result = {"fingerprint": dataset.fingerprint, "num_rows": len(dataset), "bad_rows": bad}
    write_text_atomic(check_path(dataset), json.dumps(result, indent=1))
    return result


@dataclass
class CheckArguments:
    dataset: str = field(metadata={"help": "A local folder (class or speaker subfolders) or a Hub dataset name."})
    split: str = field(default="train", metadata={"help": "Hub datasets: the split to check."})
    modality: str = field(default="image", metadata={"help": "'image' or 'audio'."})
    num_workers: int = field(default=2, metadata={"help": "Worker processes that decode the files."})


def main(argv=None) -> dict:
    from ..common.recipes import parse_command

    (args,) = parse_command(argv, (CheckArguments,), description=__doc__)
    if args.modality not in ("image", "audio"):
        raise ValueError(f"--modality must be 'image' or 'audio', got {args.modality!r}.")
    local = Path(args.dataset).is_dir()
    if args.modality == "image":  # the full scale (no draft) and any channels: only unreadable files count
        options = {"convert_channels": True, "draft": False}
        dataset = load_image_folder(args.dataset, 8, 3, **options) if local else load_hub_image_dataset(args.dataset, args.split, 8, 3, **options)
    else:
        options = {"mix_to_mono": True}
        dataset = load_audio_folder(args.dataset, 16000, **options) if local else load_hub_audio_dataset(args.dataset, args.split, 16000, **options)
    assert isinstance(dataset, (ImageDataset, AudioDataset))
    result = check_dataset(dataset, args.num_workers)
    print(f"{len(result['bad_rows'])} of {result['num_rows']} files cannot be used" + (":" if result["bad_rows"] else "."))
    for row, reason in result["bad_rows"][:20]:
        print(f"  {reason}")
    print(f"cached in {check_path(dataset)}: later datasets of these files skip them without decoding them.")
    return result


if __name__ == "__main__":
    main()
