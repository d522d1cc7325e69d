"""Encode a dataset with a trained tokenizer into a code dataset on disk (stage two's input).

    python -m stage1_tokenizer.encode --tokenizer runs/fashion_mnist/model --dataset fashion_mnist \
        --split train --output_dir codes/fashion_mnist-train
    accelerate launch --num_processes 8 -m stage1_tokenizer.encode --tokenizer runs/imagenet/model \
        --dataset imagenet-1k --split train --output_dir codes/imagenet-train       # shards over processes
    python -m stage1_tokenizer.encode --tokenizer runs/vizdoom-latent/model --codes codes/vizdoom-train \
        --output_dir codes/vizdoom-latent-train                                      # a latent VQ-VAE's codes

The code dataset's layout is `stage1_tokenizer.code_dataset`'s. Every process encodes its share of
the shards in memory that does not grow with the dataset; an interrupted encode, run again with
the same arguments, keeps its finished shards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from accelerate import Accelerator
from torch.utils.data import Subset
from transformers import AutoConfig

from .common.files import check_output_dir
from .common.hub import check_local_or_hub
from .common.recipes import parse_command
from .configuration_latent_vqvae import LatentVQVAEConfig
from .data import DataArguments, build_audio_sources, build_datasets
from .encoding import encode_latent_codes, encode_to_code_dataset
from .modeling_latent_vqvae import LatentVQVAEModel
from .modeling_vqvae import VQVAEModel

SPLITS = ("train", "test")  # of the built-in datasets and of a local folder (its held-out share)


@dataclass
class EncodeArguments:
    tokenizer: str = field(metadata={"help": "A tokenizer's model folder, e.g. runs/fashion_mnist/model."})
    output_dir: str = field(metadata={"help": "Where the code dataset is written."})
    split: str = field(default="train", metadata={"help": "'train' or 'test' (a hub dataset: any of its splits)."})
    limit: int | None = field(default=None, metadata={"help": "Encode only the first N examples."})
    batch_size: int = field(default=256, metadata={"help": "Images per batch (audio: one utterance at a time)."})
    num_workers: int | None = field(default=None, metadata={"help": "DataLoader workers per process (default: the usable cores / processes)."})
    shard_size: int = field(default=10_000, metadata={"help": "Rows per Arrow shard: the unit of sharding over processes and of resuming."})
    codes: str | None = field(
        default=None, metadata={"help": "With a latent VQ-VAE as --tokenizer: the code dataset of the tokenizer below it."}
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace an --output_dir that vqgen did not write."})

    def __post_init__(self):
        for name in ("limit", "batch_size", "shard_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be a positive number, got {value}.")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"--num_workers must be >= 0, got {self.num_workers}.")


def main(argv=None) -> Path:
    args, data = parse_command(argv, (EncodeArguments, DataArguments), description=__doc__)
    check_output_dir(args.output_dir, args.overwrite_output_dir)  # before any work
    check_local_or_hub(args.tokenizer, "--tokenizer")
    options = {"batch_size": args.batch_size, "overwrite": args.overwrite_output_dir}
    if AutoConfig.from_pretrained(args.tokenizer).model_type == LatentVQVAEConfig.model_type:
        if args.codes is None:
            raise ValueError("a latent VQ-VAE encodes codes, not data: pass --codes, the code dataset of the tokenizer below it.")
        path = encode_latent_codes(LatentVQVAEModel.from_pretrained(args.tokenizer), args.codes, args.output_dir, **options)
        Accelerator().print(f"wrote the {LatentVQVAEModel.__name__} codes of {args.codes} to {path}")
        return path
    model = VQVAEModel.from_pretrained(args.tokenizer)
    config = model.config
    local = data.dataset in ("fashion_mnist", "photos", "vizdoom", "speech") or Path(data.dataset).is_dir()
    if local and args.split not in SPLITS:
        raise ValueError(f"--split {args.split!r} is not a split of {data.dataset}; choose one of {', '.join(SPLITS)}.")
    data.train_split = data.eval_split = args.split
    data.eval_limit = None  # the whole split
    if config.modality == "audio":  # whole utterances, not training crops
        split = "train" if args.split == "train" else "test"
        train, held_out = build_audio_sources(data, config, split=split)
        source = train if split == "train" else held_out
        if config.speakers and source.speakers != config.speakers:
            raise ValueError(
                f"{data.dataset} names the speakers {source.speakers}, but the tokenizer was trained with "
                f"{config.speakers}: encode data whose speaker ids mean what they meant in training."
            )
        id2label = dict(enumerate(source.speakers or []))
    else:
        train, held_out = build_datasets(data, config)
        source = train if args.split == "train" else held_out
        inner = getattr(source, "dataset", source)
        names = getattr(inner, "class_names", None)  # frame sources name their maps
        id2label = getattr(inner, "id2label", None) or (dict(enumerate(names)) if names else None)
    if args.limit is not None:
        source = Subset(source, range(min(args.limit, len(source))))
    path = encode_to_code_dataset(
        model, source, args.output_dir, id2label=id2label, source=data.dataset, num_workers=args.num_workers,
        shard_size=args.shard_size, **options,
    )  # fmt: skip
    layout = f"{config.code_strides} samples per code" if config.modality == "audio" else f"codes {config.code_grids}"
    Accelerator().print(f"wrote {len(source)} examples of {layout} to {path}")
    return path


if __name__ == "__main__":
    main()
