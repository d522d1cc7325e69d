"""Train an image VQ-VAE tokenizer.

    accelerate launch -m stage1_tokenizer.train recipes/fashion_mnist.yaml
    python -m stage1_tokenizer.train --quantizer gmvq --max_steps 2000 --output_dir runs/fmnist
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m stage1_tokenizer.train ...

Flags or one YAML/JSON file, parsed by `transformers.HfArgumentParser` from three dataclasses:
`ModelArguments` (the `VQVAEConfig` fields), `DataArguments` and `TrainingConfig` (the loop's).
Writes OUTPUT_DIR/model (save_pretrained), checkpoints/, logs/ (TensorBoard) and
samples/reconstructions-step-N.png (originals over reconstructions), codebook_usage.png.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from .configuration_vqvae import VQVAEConfig
from .data import FashionMNIST, PhotoCrops, load_hub_image_dataset, load_image_folder
from .modeling_vqvae import VQVAEModel
from .quantizers import QUANTIZERS, CodebookUsage
from .training import TrainingConfig, parse_recipe_args, train
from .visualize import plot_codebook_usage, save_image_grid


@dataclass
class ModelArguments:
    """The fields of `VQVAEConfig` (defaults documented there)."""

    in_channels: int = 1
    image_size: int = 28
    hidden_channels: int = 64
    num_res_blocks: int = 2
    num_downsamples: int = 2
    num_levels: int = field(default=1, metadata={"help": "1 (VQ-VAE) or 2 (VQ-VAE-2: top level at twice the stride)."})
    code_dim: int = 64
    codebook_size: int = 512
    quantizer: str = field(default="gmvq", metadata={"help": f"One of {', '.join(QUANTIZERS)}."})
    quantizer_options: str = field(default="{}", metadata={"help": 'JSON, e.g. \'{"dead_code_steps": 100}\'.'})

    def to_config(self) -> VQVAEConfig:
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"--quantizer {self.quantizer!r} is unknown; choose one of {', '.join(QUANTIZERS)}.")
        try:
            options = json.loads(self.quantizer_options)
        except json.JSONDecodeError as error:
            raise ValueError(f"--quantizer_options must be a JSON object, got {self.quantizer_options!r}: {error}") from None
        stride = 2 ** (self.num_downsamples + self.num_levels - 1)
        if self.image_size % stride:
            raise ValueError(
                f"--image_size {self.image_size} is not divisible by the total stride {stride} "
                f"(2**(num_downsamples + num_levels - 1)); use {self.image_size // stride * stride} or "
                f"{(self.image_size // stride + 1) * stride}."
            )
        return VQVAEConfig(**{**asdict(self), "quantizer_options": options})


@dataclass
class DataArguments:
    dataset: str = field(
        default="fashion_mnist",
        metadata={
            "help": "'fashion_mnist' (built-in), 'photos' (crops of scikit-image's photos, built-in), "
            "a local folder of class subfolders, or a Hugging Face Hub dataset name."
        },
    )
    train_split: str = field(default="train", metadata={"help": "Hub dataset split to train on."})
    eval_split: str = field(default="test", metadata={"help": "Hub dataset split to evaluate on."})
    train_limit: int | None = field(default=None, metadata={"help": "Use only the first N training images."})
    eval_limit: int | None = field(default=2000, metadata={"help": "Evaluate on N held-out images."})
    num_crops: int = field(default=20000, metadata={"help": "'photos': crops in the training split."})
    on_bad_image: str = field(default="raise", metadata={"help": "'raise' or 'skip' (counted, reported) unreadable images."})
    convert_channels: bool = field(default=False, metadata={"help": "Convert gray <-> RGB instead of refusing."})
    num_examples: int = field(default=16, metadata={"help": "Images in each reconstruction PNG."})


def _limit(dataset, limit):
    return dataset if limit is None or limit >= len(dataset) else Subset(dataset, range(limit))


def build_datasets(data: DataArguments, model_args: ModelArguments):
    """(train, eval) datasets of {"pixel_values", "label"} shaped for the model."""
    size, channels = model_args.image_size, model_args.in_channels
    if data.dataset == "fashion_mnist":
        if channels != 1 or size != 28:
            raise ValueError(
                f"Fashion-MNIST images are 1 x 28 x 28, but the model expects {channels} x {size} x {size}: "
                "pass --in_channels 1 --image_size 28."
            )
        return FashionMNIST("train", limit=data.train_limit), FashionMNIST("test", limit=data.eval_limit)
    if data.dataset == "photos":
        train = PhotoCrops(size, data.num_crops, "train", seed=0, channels=channels)
        held_out = PhotoCrops(size, data.eval_limit or 1000, "test", seed=1, channels=channels)
        return _limit(train, data.train_limit), held_out
    options = {"on_bad_image": data.on_bad_image, "convert_channels": data.convert_channels}
    if Path(data.dataset).is_dir():  # a local folder: hold out eval_limit images, fixed by the seed
        full = load_image_folder(data.dataset, size, channels, **options)
        held = min(data.eval_limit or max(1, len(full) // 10), len(full) - 1)
        order = torch.randperm(len(full), generator=torch.Generator().manual_seed(0)).tolist()
        return _limit(Subset(full, order[held:]), data.train_limit), Subset(full, order[:held])
    train = load_hub_image_dataset(data.dataset, data.train_split, size, channels, **options)
    held_out = load_hub_image_dataset(data.dataset, data.eval_split, size, channels, **options)
    return _limit(train, data.train_limit), _limit(held_out, data.eval_limit)


def compute_loss(model, batch):
    output = model(batch["pixel_values"])
    metrics = {"reconstruction_mse": output.reconstruction_loss.detach(), "quantizer_loss": output.quantizer_loss.detach()}
    names = ["perplexity_top", "perplexity_bottom"] if len(output.perplexity) == 2 else ["perplexity"]
    metrics.update({name: value.detach() for name, value in zip(names, output.perplexity)})
    return output.loss, metrics


def make_evaluate(eval_dataset, data: DataArguments, output_dir: Path, codebook_size: int):
    """Held-out MSE of decode(codes), codebook usage and perplexity over the eval split (sharded
    over processes, summed with reduce), plus a PNG of reconstructions on the main process."""

    def evaluate(model, accelerator, step):
        unwrapped = accelerator.unwrap_model(model)
        shard = range(accelerator.process_index, len(eval_dataset), accelerator.num_processes)
        levels = unwrapped.config.num_levels
        usages = [CodebookUsage(codebook_size) for _ in range(levels)]
        squared_error = torch.zeros((), device=accelerator.device)
        with torch.no_grad():
            for start in range(0, len(shard), 256):
                images = torch.stack([eval_dataset[i]["pixel_values"] for i in shard[start : start + 256]])
                images = images.to(accelerator.device)
                codes = unwrapped.encode(images)
                for usage, level_codes in zip(usages, codes):
                    usage.update(level_codes)
                squared_error += F.mse_loss(unwrapped.decode(codes), images, reduction="sum")
        squared_error = accelerator.reduce(squared_error, reduction="sum").item()
        pixels = len(eval_dataset) * eval_dataset[0]["pixel_values"].numel()
        metrics = {"mse_from_codes": squared_error / pixels}
        names = ["top", "bottom"] if levels == 2 else [unwrapped.config.quantizer]
        counts = {}
        for name, usage in zip(names, usages):
            suffix = f"_{name}" if levels == 2 else ""
            # a collective: every rank calls it
            metrics[f"codebook_used{suffix}"], metrics[f"perplexity{suffix}"], counts[name] = usage.summarize()
        if accelerator.is_main_process:
            examples = torch.stack([eval_dataset[i]["pixel_values"] for i in range(min(data.num_examples, len(eval_dataset)))])
            with torch.no_grad():
                reconstructions = unwrapped.decode(unwrapped.encode(examples.to(accelerator.device)))
            save_image_grid([examples, reconstructions.cpu()], output_dir / "samples" / f"reconstructions-step-{step:07d}.png")
            plot_codebook_usage(counts, output_dir / "codebook_usage.png")
        return metrics

    return evaluate


def parse_args(argv=None):
    """Flags, or a YAML/JSON recipe followed by flags that override it."""
    return parse_recipe_args((ModelArguments, DataArguments, TrainingConfig), argv)


def main(argv=None) -> tuple[VQVAEModel, dict]:
    """Parses the arguments, trains, and returns the trained model and its last evaluation."""
    model_args, data_args, training = parse_args(argv)
    config = model_args.to_config()  # bad model flags fail here, before any data is read
    if data_args.on_bad_image not in ("raise", "skip"):
        raise ValueError(f"--on_bad_image must be 'raise' or 'skip', got {data_args.on_bad_image!r}.")
    train_dataset, eval_dataset = build_datasets(data_args, model_args)
    torch.manual_seed(training.seed)
    model = VQVAEModel(config)
    output_dir = Path(training.output_dir)
    metrics = train(
        model,
        train_dataset,
        training,
        compute_loss=compute_loss,
        evaluate=make_evaluate(eval_dataset, data_args, output_dir, config.codebook_size),
        run_config={**asdict(model_args), **asdict(data_args)},
    )
    return model, metrics


if __name__ == "__main__":
    main()
