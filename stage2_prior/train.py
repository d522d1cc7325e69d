"""Train a prior on a code dataset (stage two).

    python -m stage1_tokenizer.encode --tokenizer runs/fmnist/model --split train --output_dir codes/fmnist-train
    python -m stage1_tokenizer.encode --tokenizer runs/fmnist/model --split test --output_dir codes/fmnist-test
    accelerate launch -m stage2_prior.train recipes/fashion_mnist_prior.yaml
    accelerate launch -m stage2_prior.train --prior pixelcnn --tokenizer runs/fmnist/model \
        --train_codes codes/fmnist-train --eval_codes codes/fmnist-test --output_dir runs/fmnist-prior

The loop is stage one's (`stage1_tokenizer.training.train`): Accelerate, checkpoints, exact
resume, TensorBoard, tqdm. Code datasets made by another tokenizer than `--tokenizer` are refused.
The prior's config records the tokenizer's codebook size, code grid, labels and fingerprint.
`--level 1` trains the bottom prior of a two-level tokenizer, conditioned on the top codes.
Speech codes (an audio tokenizer's, one sequence per utterance) are modelled in windows of
`--code_length` codes, conditioned on the speaker:

    accelerate launch -m stage2_prior.train recipes/speech_prior.yaml

Evaluation reports the held-out negative log-likelihood in nats per code and in bits per input
dimension (the codes' share: total nats of an image's codes / (pixels x channels x ln 2); for
audio, per sample), summed over all processes, and writes a PNG with one row of decoded samples
per class (audio: a WAV per speaker and their spectrograms).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from torch.utils.data import Dataset, default_collate
from transformers import AutoModel

from stage1_tokenizer import LatentVQVAEModel, VQVAEModel
from stage1_tokenizer.encode import load_code_dataset
from stage1_tokenizer.training import TrainingConfig, parse_recipe_args, train
from stage1_tokenizer.visualize import plot_spectrograms, save_image_grid, save_wav

from .generator import write_bundle
from .pixelcnn import PixelCNNConfig, PixelCNNPrior
from .prior import AutoregressivePrior
from .transformer import TransformerConfig, TransformerPrior
from .wavenet import WaveNetConfig, WaveNetPrior

PRIORS = {
    "pixelcnn": (PixelCNNConfig, PixelCNNPrior),
    "wavenet": (WaveNetConfig, WaveNetPrior),
    "transformer": (TransformerConfig, TransformerPrior),
}


@dataclass
class PriorArguments:
    prior: str = field(default="transformer", metadata={"help": f"One of {', '.join(PRIORS)}."})
    prior_config: str = field(
        default="{}", metadata={"help": 'JSON of the prior\'s own config fields, e.g. \'{"num_layers": 6}\'.'}
    )
    conditional: bool = field(default=True, metadata={"help": "Condition on the labels (when the codes have them)."})
    condition_dropout: float = field(default=0.0, metadata={"help": "For classifier-free guidance, e.g. 0.1."})
    level: int = field(default=0, metadata={"help": "Tokenizer level to model: 0 = top; 1 = bottom, given the top."})


@dataclass
class CodeDataArguments:
    tokenizer: str = field(default=None, metadata={"help": "The tokenizer's save_pretrained folder (required)."})
    train_codes: str = field(default=None, metadata={"help": "Code dataset to train on (stage1_tokenizer.encode)."})
    eval_codes: str | None = field(default=None, metadata={"help": "Held-out code dataset (same tokenizer)."})
    eval_limit: int | None = field(default=None, metadata={"help": "Evaluate on the first N held-out examples."})
    samples_per_class: int = field(default=8, metadata={"help": "Decoded samples per class in each PNG (0: none)."})
    sample_classes: int = field(default=10, metadata={"help": "Rows of the sample PNG: the first N classes."})
    sample_temperature: float = field(default=1.0, metadata={"help": "Temperature of those samples."})
    bundle_dir: str | None = field(
        default=None,
        metadata={"help": "Also write a generator bundle (tokenizer + this prior; one-level tokenizers) here."},
    )
    label_set: str | None = field(default=None, metadata={"help": "The bundle's label set: 'imagenet-1k' or none."})
    code_length: int = field(default=256, metadata={"help": "Audio codes: codes per training window of the modelled level."})


class CodeDataset(Dataset):
    """Items {"codes": (h, w), "context": (h', w') or absent, "label": int or absent} of one level."""

    def __init__(self, codes, level: int, conditional: bool, limit: int | None = None):
        columns = [f"codes_{level}"] + ([f"codes_{level - 1}"] if level > 0 else [])
        if conditional:
            columns.append("label")
        if limit is not None:
            codes = codes.select(range(min(limit, len(codes))))
        table = codes.with_format("torch", columns=columns)[:]  # {column: tensor}, all rows
        self.codes = table[f"codes_{level}"].long()
        self.context = table[f"codes_{level - 1}"].long() if level > 0 else None
        self.labels = table["label"].long() if conditional else None

    def __len__(self):
        return len(self.codes)

    def __getitem__(self, i):
        item = {"codes": self.codes[i]}
        if self.context is not None:
            item["context"] = self.context[i]
        if self.labels is not None:
            item["label"] = self.labels[i]
        return item


class SequenceWindows(Dataset):
    """Windows of `length` codes out of code sequences of any length (speech: one per utterance),
    as CodeDataset items. Training windows start at random (the global torch RNG, which resume
    restores); held-out ones are each sequence's middle. A lower level's window starts at an even
    code, under the `length // 2` codes of the level above that form its context. Sequences
    shorter than a window are left out."""

    def __init__(self, codes, level: int, conditional: bool, length: int, random: bool, limit: int | None = None):
        if length < 2 or (level > 0 and length % 2):
            raise ValueError(f"--code_length must be at least 2 (and even for a lower level), got {length}.")
        if limit is not None:
            codes = codes.select(range(min(limit, len(codes))))
        sequences = codes[f"codes_{level}"]
        keep = [i for i, sequence in enumerate(sequences) if len(sequence) >= length]
        if not keep:
            longest = max(map(len, sequences), default=0)
            raise ValueError(f"no code sequence is as long as --code_length {length} (the longest has {longest}); lower it.")
        self.sequences = [torch.tensor(sequences[i], dtype=torch.long) for i in keep]
        self.context = [torch.tensor(codes[f"codes_{level - 1}"][i], dtype=torch.long) for i in keep] if level > 0 else None
        self.labels = torch.tensor(codes["label"], dtype=torch.long)[keep] if conditional else None
        self.length, self.random, self.skipped = length, random, len(sequences) - len(keep)

    def __len__(self):
        return len(self.sequences)

    def __getitem__(self, i):
        sequence, stride = self.sequences[i], 2 if self.context is not None else 1
        room = (len(sequence) - self.length) // stride
        start = stride * (int(torch.randint(room + 1, ())) if self.random else room // 2)
        item = {"codes": sequence[start : start + self.length]}
        if self.context is not None:
            item["context"] = self.context[i][start // 2 : (start + self.length) // 2]
        if self.labels is not None:
            item["label"] = self.labels[i]
        return item


def compute_loss(model, batch):
    loss = model(batch["codes"], batch.get("label"), batch.get("context")).loss
    return loss, {"nll_nats_per_code": loss.detach()}


@torch.no_grad()
def negative_log_likelihood(model: AutoregressivePrior, dataset, accelerator, batch_size: int = 256) -> dict:
    """Held-out NLL, each process scoring its shard, the sums reduced across processes."""
    shard = range(accelerator.process_index, len(dataset), accelerator.num_processes)
    total = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for start in range(0, len(shard), batch_size):
        batch = default_collate([dataset[i] for i in shard[start : start + batch_size]])
        batch = {name: value.to(accelerator.device) for name, value in batch.items()}
        output = model(batch["codes"], batch.get("label"), batch.get("context"))
        total += output.loss.double() * batch["codes"].numel()
    total = accelerator.reduce(total, reduction="sum").item()
    codes_per_example = dataset[0]["codes"].numel()
    return {"nll_nats_per_code": total / (len(dataset) * codes_per_example), "nll_nats_per_example": total / len(dataset)}


def make_evaluate(eval_dataset, tokenizer: VQVAEModel, args: CodeDataArguments, output_dir: Path, level: int):
    c = tokenizer.config
    latent = isinstance(tokenizer, LatentVQVAEModel)
    if latent:  # a latent VQ-VAE's codes: its input dimensions are the codes below it
        input_dims = math.prod(c.input_grid)
    elif c.modality == "audio":  # one input dimension per sample under the window
        input_dims = args.code_length * c.code_strides[level]
    else:
        input_dims = c.in_channels * c.image_size**2

    def evaluate(model, accelerator, step):
        prior = accelerator.unwrap_model(model)
        metrics = negative_log_likelihood(prior, eval_dataset, accelerator)
        metrics["code_bits_per_input_dim"] = metrics["nll_nats_per_example"] / (input_dims * math.log(2))
        # a latent VQ-VAE decodes to codes, not to something to look at: no samples to write
        if accelerator.is_main_process and args.samples_per_class > 0 and not latent:
            if c.modality == "audio":
                write_speaker_samples(prior, tokenizer, args, output_dir / "samples" / f"step-{step:07d}")
            else:
                write_class_samples(prior, tokenizer, eval_dataset, args, output_dir / "samples" / f"samples-step-{step:07d}.png")
        return metrics

    return evaluate


@torch.no_grad()
def write_speaker_samples(prior, tokenizer, args, folder: Path) -> Path | None:
    """Audio: one sampled window of codes per speaker (the first `sample_classes`), decoded with
    that speaker's voice, as WAV files and a PNG of their spectrograms. Only a one-level
    tokenizer's prior decodes alone."""
    if tokenizer.config.num_levels != 1:
        return None
    speakers = list(range(min(prior.config.num_classes, args.sample_classes))) if prior.config.num_classes else [None]
    generator = torch.Generator(device=prior.device).manual_seed(0)
    tokenizer = tokenizer.to(prior.device)
    waves, names = [], []
    for speaker in speakers:
        codes = prior.generate(1, condition=speaker, temperature=args.sample_temperature, generator=generator)
        voice = speaker if tokenizer.config.speakers else None
        waves.append(tokenizer.decode(codes, voice if voice is None else torch.tensor([voice]), generator=generator)[0].cpu())
        names.append("unconditional" if speaker is None else prior.config.id2label.get(speaker, str(speaker)))
        save_wav(waves[-1], folder / f"{names[-1]}.wav", tokenizer.config.sampling_rate)
    return plot_spectrograms({"samples": waves}, folder / "spectrograms.png", tokenizer.config.sampling_rate)


@torch.no_grad()
def write_class_samples(prior, tokenizer, eval_dataset, args, path: Path) -> Path | None:
    """One row of decoded samples per class (one row if unconditional). A bottom-level prior
    is sampled given held-out top codes of that class; a top prior of a two-level tokenizer has
    no bottom codes to decode with, so it writes nothing."""
    levels = tokenizer.config.num_levels
    if prior.config.level == 0 and levels == 2:
        return None
    n = args.samples_per_class
    classes = range(min(prior.config.num_classes, args.sample_classes)) if prior.config.num_classes else [None]
    generator = torch.Generator(device=prior.device).manual_seed(0)
    tokenizer = tokenizer.to(prior.device)
    rows = []
    for label in classes:
        context = None
        if eval_dataset.context is not None:  # held-out top codes (of that class when labelled)
            pool = torch.arange(len(eval_dataset))
            if label is not None:
                pool = pool[eval_dataset.labels == label]
            context = eval_dataset.context[pool[:n]].to(prior.device)
            if len(context) < n:
                continue
        condition = None if label is None else torch.full((n,), label, dtype=torch.long, device=prior.device)
        codes = prior.generate(n, condition=condition, context=context, temperature=args.sample_temperature, generator=generator)
        rows.append(tokenizer.decode([context, codes] if context is not None else [codes]).cpu())
    if not rows:
        return None
    return save_image_grid(rows, path)


def build_prior(
    prior_args: PriorArguments, metadata: dict, tokenizer: VQVAEModel, has_labels: bool, code_length: int = 256
) -> AutoregressivePrior:
    if prior_args.prior not in PRIORS:
        raise ValueError(f"--prior {prior_args.prior!r} is unknown; choose one of {', '.join(PRIORS)}.")
    levels = metadata["num_levels"]
    if not 0 <= prior_args.level < levels:
        raise ValueError(f"--level {prior_args.level} does not exist: the tokenizer has {levels} level(s), 0 = top.")
    try:
        options = json.loads(prior_args.prior_config)
    except json.JSONDecodeError as error:
        raise ValueError(f"--prior_config must be a JSON object, got {prior_args.prior_config!r}: {error}") from None
    config_class, model_class = PRIORS[prior_args.prior]
    id2label = {int(k): v for k, v in metadata["id2label"].items()}
    conditional = prior_args.conditional and has_labels
    if metadata.get("modality") == "audio":  # sequences of any length, modelled in windows
        grids = [[code_length // 2 ** (prior_args.level - level)] for level in range(levels)]
    else:
        grids = metadata["code_grids"]
    config = config_class(
        codebook_size=metadata["codebook_size"],
        code_shape=grids[prior_args.level],
        context_shape=grids[prior_args.level - 1] if prior_args.level > 0 else None,
        num_classes=(max(id2label) + 1 if id2label else metadata.get("num_classes", 0)) if conditional else 0,
        condition_dropout=prior_args.condition_dropout if conditional else 0.0,
        tokenizer_fingerprint=metadata["tokenizer_fingerprint"],
        level=prior_args.level,
        **({"id2label": id2label} if conditional and id2label else {}),
        **options,
    )
    return model_class(config)


def main(argv=None) -> tuple[AutoregressivePrior, dict]:
    prior_args, data_args, training = parse_recipe_args((PriorArguments, CodeDataArguments, TrainingConfig), argv)
    if data_args.tokenizer is None or data_args.train_codes is None:
        raise ValueError("pass --tokenizer (a tokenizer folder) and --train_codes (its code dataset).")
    tokenizer = AutoModel.from_pretrained(data_args.tokenizer).eval()  # a VQVAEModel, or a LatentVQVAEModel
    train_codes, metadata = load_code_dataset(data_args.train_codes, tokenizer)
    has_labels = "label" in train_codes.column_names
    if data_args.bundle_dir is not None and isinstance(tokenizer, LatentVQVAEModel):
        raise ValueError("--bundle_dir: bundles hold an image or speech tokenizer; a latent VQ-VAE's prior is used with frames_round_trip's parts.")
    if data_args.bundle_dir is not None and metadata["num_levels"] != 1:
        raise ValueError(
            "--bundle_dir needs a one-level tokenizer; for two levels train both priors, then "
            "`python -m stage2_prior.generator --tokenizer ... --priors TOP BOTTOM --output_dir ...`."
        )
    if prior_args.conditional and not has_labels:
        print(f"{data_args.train_codes} has no labels: training an unconditional prior.")
    conditional = prior_args.conditional and has_labels
    torch.manual_seed(training.seed)
    model = build_prior(prior_args, metadata, tokenizer, has_labels, data_args.code_length)
    audio = metadata.get("modality") == "audio"

    def dataset(codes, train: bool, limit=None):
        if not audio:
            return CodeDataset(codes, prior_args.level, conditional, limit)
        windows = SequenceWindows(codes, prior_args.level, conditional, data_args.code_length, random=train, limit=limit)
        if windows.skipped:
            print(f"left out {windows.skipped} {'training' if train else 'held-out'} sequences shorter than --code_length {data_args.code_length}")
        return windows

    train_dataset = dataset(train_codes, train=True)
    evaluate = None
    if data_args.eval_codes is not None:
        eval_codes, _ = load_code_dataset(data_args.eval_codes, tokenizer)
        eval_dataset = dataset(eval_codes, train=False, limit=data_args.eval_limit)
        evaluate = make_evaluate(eval_dataset, tokenizer, data_args, Path(training.output_dir), prior_args.level)
    metrics = train(
        model,
        train_dataset,
        training,
        compute_loss=compute_loss,
        evaluate=evaluate,
        run_config={**asdict(prior_args), **asdict(data_args)},
    )
    if data_args.bundle_dir is not None and PartialState().is_main_process:
        write_bundle(data_args.tokenizer, [Path(training.output_dir) / "model"], data_args.bundle_dir,
                     label_set=data_args.label_set, training_data=metadata.get("dataset"))  # fmt: skip
        print(f"wrote the generator bundle to {data_args.bundle_dir}")
    return model, metrics


if __name__ == "__main__":
    main()
