"""Train a prior on a code dataset (stage two).

    python -m stage1_tokenizer.encode --tokenizer runs/fmnist/model --split train --output_dir codes/fmnist-train
    python -m stage1_tokenizer.encode --tokenizer runs/fmnist/model --split test --output_dir codes/fmnist-test
    accelerate launch -m stage2_prior.train recipes/fashion_mnist_prior.yaml
    accelerate launch -m stage2_prior.train --prior pixelcnn --model.num_layers 8 --tokenizer runs/fmnist/model \
        --train_codes codes/fmnist-train --eval_codes codes/fmnist-test --output_dir runs/fmnist-prior

The loop is the shared one (`stage1_tokenizer.common.training`): Accelerate, checkpoints, exact
resume, TensorBoard, tqdm. The model's fields are the chosen prior's config (`--prior`, then a
recipe's `model:` mapping or `--model.NAME`; `--prior pixelcnn --help` lists PixelCNN's); the
fields the codes decide (codebook size, code grid, classes, fingerprint) are read from them.
Code datasets made by another tokenizer than `--tokenizer` are refused. `--level 1` trains the
bottom prior of a two-level tokenizer, conditioned on the top codes. Speech codes (an audio
tokenizer's, one sequence per utterance) are modelled in windows of `--code_length` codes,
conditioned on the speaker:

    accelerate launch -m stage2_prior.train recipes/speech_prior.yaml

Evaluation reports the held-out negative log-likelihood in nats per code and in bits per input
dimension (the codes' share: total nats of an image's codes / (pixels x channels x ln 2); for
audio, per sample), over all processes, and writes a PNG with one row of decoded samples per
class (audio: a WAV per speaker and their spectrograms).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import AutoModel

from stage1_tokenizer import LatentVQVAEModel, VQVAEModel
from stage1_tokenizer.code_dataset import CodeDataset, SequenceWindows, load_code_dataset
from stage1_tokenizer.common.files import check_output_dir
from stage1_tokenizer.common.hub import check_local_or_hub
from stage1_tokenizer.common.recipes import parse_command, peek_option
from stage1_tokenizer.common.training import TrainingConfig, eval_loader, prepare_output_dir, train
from stage1_tokenizer.common.visualize import plot_spectrograms, save_image_grid, save_wav

from . import PRIORS
from .bundle import write_bundle
from .prior import DERIVED_FIELDS, AutoregressivePrior


@dataclass
class PriorArguments:
    prior: str = field(default="transformer", metadata={"help": f"One of {', '.join(PRIORS)}; the model's fields follow it."})
    conditional: bool = field(default=True, metadata={"help": "Condition on the labels (when the codes have them)."})
    level: int = field(default=0, metadata={"help": "Tokenizer level to model: 0 = top; 1 = bottom, given the top."})
    context: bool = field(
        default=True,
        metadata={"help": "A lower level sees the codes of the level above (false: the ablation without them)."},
    )

    def __post_init__(self):
        if self.prior not in PRIORS:
            raise ValueError(f"--prior {self.prior!r} is unknown; choose one of {', '.join(PRIORS)}.")


@dataclass
class CodeDataArguments:
    tokenizer: str | None = field(default=None, metadata={"help": "The tokenizer's model folder (required)."})
    train_codes: str | None = field(default=None, metadata={"help": "Code dataset to train on (stage1_tokenizer.encode)."})
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


def _context(model, batch):
    """The level above's codes, for a prior that takes them (not for the ablation without context)."""
    wants_context = getattr(model, "module", model).config.context_shape is not None  # DDP wraps the model
    return batch.get("context") if wants_context else None


def compute_loss(model, batch):
    loss = model(batch["codes"], batch.get("label"), _context(model, batch)).loss
    return loss, {"nll_nats_per_code": loss.detach()}


@torch.no_grad()
def negative_log_likelihood(model: AutoregressivePrior, dataset, accelerator, batch_size: int = 256) -> dict:
    """Held-out NLL: every process scores its share, `gather_for_metrics` brings each example's
    total together, in order (the same sums with 1 process or many)."""
    totals = []
    for batch in eval_loader(accelerator, dataset, batch_size):
        logits = model(batch["codes"], batch.get("label"), _context(model, batch)).logits
        nats = torch.nn.functional.cross_entropy(logits.movedim(-1, 1).float(), batch["codes"], reduction="none")
        totals.append(accelerator.gather_for_metrics(nats.flatten(1).sum(1, dtype=torch.float64)))  # (B,)
    totals = torch.cat(totals)
    codes_per_example = dataset[0]["codes"].numel()
    return {"nll_nats_per_code": totals.sum().item() / (len(totals) * codes_per_example), "nll_nats_per_example": totals.mean().item()}


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
    no bottom codes to decode with, so it writes nothing; nor does a bottom prior trained without
    the top codes (an ablation: its samples have no top codes that go with them)."""
    levels = tokenizer.config.num_levels
    if levels == 2 and (prior.config.level == 0 or prior.config.context_shape is None):
        return None
    n = args.samples_per_class
    classes = range(min(prior.config.num_classes, args.sample_classes)) if prior.config.num_classes else [None]
    generator = torch.Generator(device=prior.device).manual_seed(0)
    tokenizer = tokenizer.to(prior.device)
    labels = eval_dataset.labels
    rows = []
    for label in classes:
        context = None
        if prior.config.context_shape is not None:  # held-out top codes (of that class when labelled)
            pool = torch.arange(len(eval_dataset)) if label is None or labels is None else torch.nonzero(labels == label).squeeze(1)
            if len(pool) < n:
                continue
            context = eval_dataset.contexts(pool[:n].tolist()).to(prior.device)
        condition = None if label is None else torch.full((n,), label, dtype=torch.long, device=prior.device)
        codes = prior.generate(n, condition=condition, context=context, temperature=args.sample_temperature, generator=generator)
        rows.append(tokenizer.decode([context, codes] if context is not None else [codes]).cpu())
    if not rows:
        return None
    return save_image_grid(rows, path)


def prior_config(
    kind: str, model_fields: dict, metadata: dict, level: int, conditional: bool, code_length: int = 256, context: bool = True
):
    """The prior's config: the user's fields, and those the code dataset decides."""
    levels = metadata["num_levels"]
    if not 0 <= level < levels:
        raise ValueError(f"--level {level} does not exist: the tokenizer has {levels} level(s), 0 = top.")
    config_class, _ = PRIORS[kind]
    id2label = {int(k): v for k, v in metadata["id2label"].items()}
    if metadata.get("modality") == "audio":  # sequences of any length, modelled in windows
        grids = [[code_length // 2 ** (level - upper)] for upper in range(levels)]
    else:
        grids = metadata["code_grids"]
    fields = dict(model_fields)
    if not conditional:
        fields["condition_dropout"] = 0.0
    return config_class(
        **fields,
        codebook_size=metadata["codebook_size"],
        code_shape=list(grids[level]),
        context_shape=list(grids[level - 1]) if level > 0 and context else None,
        num_classes=(max(id2label) + 1 if id2label else metadata.get("num_classes", 0)) if conditional else 0,
        tokenizer_fingerprint=metadata["tokenizer_fingerprint"],
        level=level,
        **({"id2label": id2label} if conditional and id2label else {}),
    )


def parse_args(argv=None):
    """(the prior's config fields, prior arguments, data arguments, training config)."""
    kind = peek_option(argv, "prior", PriorArguments.prior)
    if kind not in PRIORS:
        raise ValueError(f"--prior {kind!r} is unknown; choose one of {', '.join(PRIORS)}.")
    return parse_command(
        argv, (PriorArguments, CodeDataArguments, TrainingConfig), PRIORS[kind][0], derived=DERIVED_FIELDS, description=__doc__
    )


def main(argv=None) -> tuple[AutoregressivePrior, dict]:
    model_fields, prior_args, data_args, training = parse_args(argv)
    if data_args.tokenizer is None or data_args.train_codes is None:
        raise ValueError("pass --tokenizer (a tokenizer folder) and --train_codes (its code dataset).")
    # bad model settings fail here, before any data is read (the classes, read from the codes later, as one)
    PRIORS[prior_args.prior][0](**model_fields, num_classes=1)
    prepare_output_dir(training)
    if data_args.bundle_dir is not None:
        check_output_dir(data_args.bundle_dir, training.overwrite_output_dir, flag="--overwrite_output_dir")
    check_local_or_hub(data_args.tokenizer, "--tokenizer")
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
    config = prior_config(prior_args.prior, model_fields, metadata, prior_args.level, conditional, data_args.code_length, prior_args.context)
    torch.manual_seed(training.seed)
    model = PRIORS[prior_args.prior][1](config)
    audio = metadata.get("modality") == "audio"

    def dataset(codes, train: bool, limit=None):
        if not audio:
            return CodeDataset(codes, prior_args.level, conditional, limit)
        windows = SequenceWindows(
            codes, prior_args.level, conditional, data_args.code_length, random=train, limit=limit, seed=training.seed
        )
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
        run_config={**{f"model.{k}": v for k, v in model_fields.items()}, **asdict(prior_args), **asdict(data_args)},
    )
    if data_args.bundle_dir is not None and PartialState().is_main_process:
        write_bundle(data_args.tokenizer, [Path(training.output_dir) / "model"], data_args.bundle_dir,
                     label_set=data_args.label_set, training_data=metadata.get("dataset"),
                     overwrite=training.overwrite_output_dir)  # fmt: skip
        print(f"wrote the generator bundle to {data_args.bundle_dir}")
    return model, metrics


if __name__ == "__main__":
    main()
