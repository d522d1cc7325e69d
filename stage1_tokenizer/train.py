"""Train a VQ-VAE tokenizer on images or speech.

    accelerate launch -m stage1_tokenizer.train recipes/fashion_mnist.yaml
    accelerate launch -m stage1_tokenizer.train recipes/speech.yaml          # the built-in speech corpus
    accelerate launch -m stage1_tokenizer.train recipes/speech_adversarial.yaml    # its conv decoder as HiFi-GAN trains
    python -m stage1_tokenizer.train --model.quantizer gmvq --max_steps 2000 --output_dir runs/fmnist
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m stage1_tokenizer.train ...

A YAML recipe and flags (`stage1_tokenizer.common.recipes`): the model's fields are `VQVAEConfig`'s
(a recipe's `model:` mapping, flags `--model.NAME`), the rest `DataArguments`, `TrainingConfig` and
`DecoderTrainingArguments` (the speech conv decoder's mel loss and HiFi-GAN discriminators, which
checkpoints hold and the saved tokenizer does not).
Writes OUTPUT_DIR/model (save_pretrained), checkpoints/, logs/ (TensorBoard), codebook_usage.png
and, at each evaluation, samples/reconstructions-step-N.png (originals over reconstructions) or,
for audio, samples/step-N/ with WAV files of originals and reconstructions and a spectrogram PNG.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from .audio_features import log_mel_distance, mu_law_encode
from .common.recipes import parse_command
from .common.training import Adversary, TrainingConfig, check_adversarial_training, eval_loader, prepare_output_dir, train
from .common.visualize import plot_codebook_usage, plot_spectrograms, save_image_grid, save_wav
from .configuration_vqvae import VQVAEConfig
from .data import DataArguments, build_datasets
from .discriminators import DiscriminatorConfig, HiFiGANDiscriminator, discriminator_step_loss, generator_step_loss
from .modeling_vqvae import VQVAEModel
from .quantizers import CodebookUsage, options_for_run

DERIVED_FIELDS = ("speakers",)  # filled from the training data
# HiFi-GAN weighs its mel loss 45 against adversarial 1 and feature matching 2, on natural-log mel
# magnitudes; our log-mel distance is on log power, twice as large: 22.5 keeps HiFi-GAN's balance.
# The STFT loss (weight 1, on log magnitudes too) then adds a small share to the spectral terms.
ADVERSARIAL_MEL_LOSS_WEIGHT = 22.5


@dataclass
class DecoderTrainingArguments:
    """How the speech tokenizer's conv decoder is trained beyond its STFT loss: a log-mel term and
    HiFi-GAN's discriminators. Training tools only: the saved tokenizer is the same either way."""

    mel_loss_weight: float | None = field(
        default=None,
        metadata={"help": f"Conv audio decoder: weight of the log-mel L1 loss (the held-out log_mel_distance) added to the STFT loss (None: {ADVERSARIAL_MEL_LOSS_WEIGHT} with --adversarial, HiFi-GAN's 45 on our log-power mels, else 0)."},
    )
    adversarial: bool = field(
        default=False,
        metadata={"help": "Conv audio decoder: train it against HiFi-GAN's multi-period and multi-scale discriminators (least-squares GAN plus feature matching)."},
    )
    adversarial_start_step: int = field(default=0, metadata={"help": "--adversarial: steps trained without the discriminator first (0: from the start, as HiFi-GAN)."})
    feature_matching_weight: float = field(default=2.0, metadata={"help": "--adversarial: weight of the feature-matching loss (HiFi-GAN's 2; the adversarial loss weighs 1)."})
    discriminator_channels: int = field(
        default=16, metadata={"help": "--adversarial: the first layer's width c of every sub-discriminator (the periods' widen to 32c, the scales' to 8c; HiFi-GAN's: 32 and 128)."}
    )
    discriminator_max_channels: int = field(default=128, metadata={"help": "--adversarial: the discriminators' widest layer (HiFi-GAN's is 1024)."})
    discriminator_learning_rate: float | None = field(default=None, metadata={"help": "--adversarial: the discriminators' AdamW learning rate (None: --learning_rate)."})

    def __post_init__(self):
        if self.mel_loss_weight is None:
            self.mel_loss_weight = ADVERSARIAL_MEL_LOSS_WEIGHT if self.adversarial else 0.0
        for name in ("mel_loss_weight", "feature_matching_weight"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):  # NaN fails both
                raise ValueError(f"--{name} got {value!r}: it must be a finite number >= 0.")
        rate = self.discriminator_learning_rate
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"--discriminator_learning_rate got {rate!r}: it must be a finite number > 0 (or none for --learning_rate).")
        if self.adversarial:
            self.discriminator_config()  # bad widths fail now
            return
        changed = [f"--{f.name}" for f in fields(self) if f.name.startswith(("adversarial_", "feature_", "discriminator_")) and getattr(self, f.name) != f.default]
        if changed:
            raise ValueError(f"{', '.join(changed)} set without --adversarial, which they configure: add --adversarial true or drop them.")

    def discriminator_config(self) -> DiscriminatorConfig:
        try:
            return DiscriminatorConfig(channels=self.discriminator_channels, max_channels=self.discriminator_max_channels)
        except ValueError as error:
            raise ValueError(f"--discriminator_channels / --discriminator_max_channels: {error}") from None


def check_decoder_training(args: DecoderTrainingArguments, config: VQVAEConfig, training: TrainingConfig) -> None:
    """Refuses, before any work, a mel loss or an adversary for a model that has no conv audio decoder."""
    if not (args.adversarial or args.mel_loss_weight):
        return
    if config.modality != "audio" or config.audio_decoder != "conv":
        model = "an image model" if config.modality != "audio" else f"a speech model with the {config.audio_decoder} decoder"
        flags = "--adversarial" if args.adversarial else f"--mel_loss_weight {args.mel_loss_weight}"
        raise ValueError(
            f"{flags} trains the conv audio decoder, and this is {model}: set --model.modality audio --model.audio_decoder conv "
            "(recipes/speech_adversarial.yaml does), or drop the flag."
        )
    if args.adversarial:
        check_adversarial_training(training, args.adversarial_start_step)


def build_adversary(args: DecoderTrainingArguments, training: TrainingConfig) -> Adversary:
    config = args.discriminator_config()
    return Adversary(
        HiFiGANDiscriminator(config),
        discriminator_loss=discriminator_step_loss,
        generator_loss=functools.partial(generator_step_loss, feature_matching_weight=args.feature_matching_weight),
        learning_rate=args.discriminator_learning_rate or training.learning_rate,
        start_step=args.adversarial_start_step,
        settings=asdict(config),
    )


def make_compute_loss(use_speakers: bool, mel_loss_weight: float = 0.0, sampling_rate: int = 16000, adversarial: bool = False):
    """The loss of a batch and its metrics; with a mel weight the audio loss adds the log-mel
    distance; `adversarial`: also (real, reconstructed) waveforms, for the discriminators."""

    def compute_loss(model, batch):
        if "input_values" in batch:
            waves = batch["input_values"]
            output = model(waves, speaker=batch["speaker"] if use_speakers else None)
            loss, metrics = output.loss, {"reconstruction_loss": output.reconstruction_loss.detach()}
            if mel_loss_weight:
                mel = log_mel_distance(output.reconstruction, waves, sampling_rate).mean()
                loss, metrics["mel_loss"] = loss + mel_loss_weight * mel, mel.detach()
        else:
            output = model(batch["pixel_values"])
            loss, metrics = output.loss, {"reconstruction_mse": output.reconstruction_loss.detach()}
        metrics["quantizer_loss"] = output.quantizer_loss.detach()
        names = ["perplexity_top", "perplexity_bottom"] if len(output.perplexity) == 2 else ["perplexity"]
        metrics.update({name: value.detach() for name, value in zip(names, output.perplexity)})
        return (loss, metrics, (waves, output.reconstruction)) if adversarial else (loss, metrics)

    return compute_loss


compute_loss = make_compute_loss(use_speakers=False)  # images


def usage_metrics(usages: list[CodebookUsage], level_names: list[str], metrics: dict) -> dict:
    """Adds each level's codebook share used and perplexity to `metrics` (suffixed by the level's
    name when there are several); returns the code counts per level name, for the usage plot."""
    counts = {}
    for name, usage in zip(level_names, usages):
        suffix = f"_{name}" if len(usages) > 1 else ""
        metrics[f"codebook_used{suffix}"], metrics[f"perplexity{suffix}"], counts[name] = usage.summarize()
    return counts


def level_names(config) -> list[str]:
    return ["top", "bottom"] if config.num_levels == 2 else [config.quantizer]


def make_evaluate(eval_dataset, data: DataArguments, output_dir: Path, config: VQVAEConfig):
    """Held-out MSE of decode(codes), codebook usage and perplexity over the eval split (every
    process scores its share; `gather_for_metrics` brings every example's values together), plus
    a PNG of reconstructions on the main process."""

    def evaluate(model, accelerator, step):
        unwrapped = accelerator.unwrap_model(model)
        usages = [CodebookUsage(config.codebook_size, sum_over_processes=False) for _ in range(config.num_levels)]
        errors = []
        with torch.no_grad():
            for batch in eval_loader(accelerator, eval_dataset, 256):
                images = batch["pixel_values"]
                codes = unwrapped.encode(images)
                error = (unwrapped.decode(codes) - images).square().flatten(1).sum(1, dtype=torch.float64)  # (B,)
                errors.append(accelerator.gather_for_metrics(error))
                for usage, level_codes in zip(usages, codes):
                    usage.update(accelerator.gather_for_metrics(level_codes))
        errors = torch.cat(errors)
        metrics = {"mse_from_codes": errors.sum().item() / (len(errors) * eval_dataset[0]["pixel_values"].numel())}
        counts = usage_metrics(usages, level_names(config), metrics)
        if accelerator.is_main_process:
            examples = torch.stack([eval_dataset[i]["pixel_values"] for i in range(min(data.num_examples, len(eval_dataset)))])
            with torch.no_grad():
                reconstructions = unwrapped.decode(unwrapped.encode(examples.to(accelerator.device)))
            save_image_grid([examples, reconstructions.cpu()], output_dir / "samples" / f"reconstructions-step-{step:07d}.png")
            plot_codebook_usage(counts, output_dir / "codebook_usage.png")
        return metrics

    return evaluate


def make_audio_evaluate(eval_dataset, data: DataArguments, output_dir: Path, config: VQVAEConfig):
    """Held-out reconstruction over the eval crops: the log-mel distance of decode(encode(x)) for
    the conv decoder, the teacher-forced NLL in nats per sample for the WaveNet decoder (whose
    sampled decoding is too slow for a whole split); codebook usage and perplexity. On the main
    process: WAV files of a few originals and reconstructions (WaveNet: sampled with the cache,
    first half second) and their spectrograms."""
    rate, use_speakers = config.sampling_rate, bool(config.speakers)
    wavenet = config.audio_decoder == "wavenet"

    def evaluate(model, accelerator, step):
        unwrapped = accelerator.unwrap_model(model)
        usages = [CodebookUsage(config.codebook_size, sum_over_processes=False) for _ in range(config.num_levels)]
        scores = []
        with torch.no_grad():
            for batch in eval_loader(accelerator, eval_dataset, 16):
                waves, speaker = batch["input_values"], batch["speaker"] if use_speakers else None
                if wavenet:
                    output = unwrapped(waves, speaker)
                    codes = output.codes
                    targets = mu_law_encode(waves[:, 0], config.mu_law_channels)  # (B, T)
                    score = F.cross_entropy(output.logits.transpose(1, 2), targets, reduction="none").mean(1)  # (B,)
                else:
                    codes = unwrapped.encode(waves)
                    score = log_mel_distance(unwrapped.decode(codes, speaker), waves, rate)
                scores.append(accelerator.gather_for_metrics(score.double()))
                for usage, level_codes in zip(usages, codes):
                    usage.update(accelerator.gather_for_metrics(level_codes))
        scores = torch.cat(scores)
        metrics = {("nll_per_sample" if wavenet else "log_mel_distance"): scores.mean().item()}
        counts = usage_metrics(usages, level_names(config), metrics)
        if accelerator.is_main_process:
            items = [eval_dataset[i] for i in range(min(data.num_examples, 4, len(eval_dataset)))]
            waves = torch.stack([item["input_values"] for item in items]).to(accelerator.device)
            speaker = torch.stack([item["speaker"] for item in items]).to(accelerator.device) if use_speakers else None
            if wavenet:  # half a second each: sampled decoding takes about a millisecond per sample
                waves = waves[..., : max(config.total_stride, rate // 2 // config.total_stride * config.total_stride)]
            with torch.no_grad():
                reconstructions = unwrapped.decode(unwrapped.encode(waves), speaker, generator=torch.Generator(accelerator.device).manual_seed(0))
            folder = output_dir / "samples" / f"step-{step:07d}"
            for i, (original, reconstruction) in enumerate(zip(waves, reconstructions)):
                save_wav(original, folder / f"original-{i}.wav", rate)
                save_wav(reconstruction, folder / f"reconstruction-{i}.wav", rate)
            plot_spectrograms({"original": list(waves), "reconstruction": list(reconstructions)}, folder / "spectrograms.png", rate)
            plot_codebook_usage(counts, output_dir / "codebook_usage.png")
        return metrics

    return evaluate


def parse_args(argv=None) -> tuple[dict, DataArguments, TrainingConfig, DecoderTrainingArguments]:
    """(the model's config fields, data arguments, training config, decoder training arguments)
    from a recipe and flags."""
    return parse_command(
        argv, (DataArguments, TrainingConfig, DecoderTrainingArguments), VQVAEConfig, derived=DERIVED_FIELDS, description=__doc__
    )


def build_config(model_fields: dict, training: TrainingConfig, speakers: list[str] | None = None) -> VQVAEConfig:
    """The model's config; GM-VQ anneals its Gumbel temperature over the run unless told otherwise."""
    fields = dict(model_fields)
    fields["quantizer_options"] = options_for_run(fields.get("quantizer", "vq"), fields.get("quantizer_options", {}), training.max_steps)
    return VQVAEConfig(**fields, speakers=speakers or [])


def main(argv=None) -> tuple[VQVAEModel, dict]:
    """Parses the arguments, trains, and returns the trained model and its last evaluation."""
    model_fields, data_args, training, decoder_args = parse_args(argv)
    # bad model settings fail here, before any data is read
    check_decoder_training(decoder_args, build_config(model_fields, training), training)
    prepare_output_dir(training)  # and an output folder we may not write to
    train_dataset, eval_dataset = build_datasets(data_args, build_config(model_fields, training), seed=training.seed)
    speakers = getattr(train_dataset, "speakers", None) if data_args.speaker_conditioning else None
    config = build_config(model_fields, training, speakers)
    torch.manual_seed(training.seed)
    model = VQVAEModel(config)
    adversary = build_adversary(decoder_args, training) if decoder_args.adversarial else None  # seeded, as the model
    output_dir = Path(training.output_dir)
    make = make_audio_evaluate if config.modality == "audio" else make_evaluate
    compute = make_compute_loss(bool(config.speakers), decoder_args.mel_loss_weight, config.sampling_rate, decoder_args.adversarial)
    metrics = train(
        model,
        train_dataset,
        training,
        compute_loss=compute,
        evaluate=make(eval_dataset, data_args, output_dir, config),
        run_config={**{f"model.{k}": v for k, v in model_fields.items()}, **asdict(data_args), **asdict(decoder_args)},
        adversary=adversary,
    )
    return model, metrics


if __name__ == "__main__":
    main()
