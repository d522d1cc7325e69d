"""Train a VQ-VAE tokenizer on images or speech.

    accelerate launch -m stage1_tokenizer.train recipes/fashion_mnist.yaml
    accelerate launch -m stage1_tokenizer.train recipes/speech.yaml          # the built-in speech corpus
    python -m stage1_tokenizer.train --quantizer gmvq --max_steps 2000 --output_dir runs/fmnist
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m stage1_tokenizer.train ...

Flags or one YAML/JSON file, parsed by `transformers.HfArgumentParser` from three dataclasses:
`ModelArguments` (the `VQVAEConfig` fields), `DataArguments` and `TrainingConfig` (the loop's).
Writes OUTPUT_DIR/model (save_pretrained), checkpoints/, logs/ (TensorBoard), codebook_usage.png
and, at each evaluation, samples/reconstructions-step-N.png (originals over reconstructions) or,
for audio, samples/step-N/ with WAV files of originals and reconstructions and a spectrogram PNG.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from .audio import log_mel_distance
from .configuration_vqvae import VQVAEConfig
from .data import (
    AudioCrops,
    FashionMNIST,
    PhotoCrops,
    SyntheticSpeech,
    VizDoomFrames,
    load_audio_folder,
    load_hub_audio_dataset,
    load_hub_image_dataset,
    load_image_folder,
)
from .modeling_vqvae import VQVAEModel
from .quantizers import QUANTIZERS, CodebookUsage
from .training import TrainingConfig, parse_recipe_args, train
from .visualize import plot_codebook_usage, plot_spectrograms, save_image_grid, save_wav


@dataclass
class ModelArguments:
    """The fields of `VQVAEConfig` (defaults documented there)."""

    modality: str = field(default="image", metadata={"help": "'image' or 'audio' (raw waveforms)."})
    in_channels: int = 1
    image_size: int = 28
    hidden_channels: int = 64
    num_res_blocks: int = 2
    num_downsamples: int | None = field(default=None, metadata={"help": "Stride-2 steps of the bottom level (2 images, 6 audio)."})
    num_levels: int = field(default=1, metadata={"help": "1 (VQ-VAE) or 2 (VQ-VAE-2: top level at twice the stride)."})
    code_dim: int = 64
    codebook_size: int = 512
    quantizer: str = field(default="gmvq", metadata={"help": f"One of {', '.join(QUANTIZERS)}."})
    quantizer_options: str = field(default="{}", metadata={"help": 'JSON, e.g. \'{"dead_code_steps": 100}\'.'})
    sampling_rate: int = field(default=16000, metadata={"help": "Audio: samples per second (sources are resampled to it)."})
    audio_decoder: str = field(default="conv", metadata={"help": "Audio: 'wavenet' (the paper's) or 'conv' (STFT loss, fast)."})
    speaker_conditioning: bool = field(default=True, metadata={"help": "Audio: condition the decoder on the data's speakers."})
    speaker_dim: int = 64
    wavenet_channels: int = 64
    wavenet_skip_channels: int = 128
    wavenet_layers: int = 20
    wavenet_dilation_cycle: int = 10
    mu_law_channels: int = 256
    stft_resolutions: str | None = field(default=None, metadata={"help": "Audio: JSON [[fft, hop], ...] of the STFT loss."})

    @property
    def total_stride(self) -> int:
        downsamples = self.num_downsamples if self.num_downsamples is not None else (6 if self.modality == "audio" else 2)
        return 2 ** (downsamples + self.num_levels - 1)

    def to_config(self, speakers: list[str] | None = None) -> VQVAEConfig:
        """The model's config; `speakers`: the training data's speaker names (audio)."""
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"--quantizer {self.quantizer!r} is unknown; choose one of {', '.join(QUANTIZERS)}.")
        try:
            options = json.loads(self.quantizer_options)
        except json.JSONDecodeError as error:
            raise ValueError(f"--quantizer_options must be a JSON object, got {self.quantizer_options!r}: {error}") from None
        stride = self.total_stride
        if self.modality == "image" and self.image_size % stride:
            raise ValueError(
                f"--image_size {self.image_size} is not divisible by the total stride {stride} "
                f"(2**(num_downsamples + num_levels - 1)); use {self.image_size // stride * stride} or "
                f"{(self.image_size // stride + 1) * stride}."
            )
        try:
            resolutions = json.loads(self.stft_resolutions) if self.stft_resolutions else None
        except json.JSONDecodeError as error:
            raise ValueError(f"--stft_resolutions must be JSON like [[512, 128], [1024, 256]], got {self.stft_resolutions!r}: {error}") from None
        fields = {k: v for k, v in asdict(self).items() if k != "speaker_conditioning"}
        speakers = speakers if self.modality == "audio" and self.speaker_conditioning else None
        return VQVAEConfig(**{**fields, "quantizer_options": options, "speakers": speakers, "stft_resolutions": resolutions})


@dataclass
class DataArguments:
    dataset: str = field(
        default="fashion_mnist",
        metadata={
            "help": "Images: 'fashion_mnist' (built-in), 'photos' (crops of scikit-image's photos, built-in), "
            "'vizdoom' (first-person 3D frames rendered by ViZDoom, built-in). "
            "Audio: 'speech' (the built-in espeak-ng corpus). Either: a local folder of class (speaker) "
            "subfolders, or a Hugging Face Hub dataset name."
        },
    )
    train_split: str = field(default="train", metadata={"help": "Hub dataset split to train on."})
    eval_split: str = field(default="test", metadata={"help": "Hub dataset split to evaluate on."})
    train_limit: int | None = field(default=None, metadata={"help": "Use only the first N training images."})
    eval_limit: int | None = field(default=2000, metadata={"help": "Evaluate on N held-out images."})
    num_crops: int = field(default=20000, metadata={"help": "'photos': crops in the training split."})
    on_bad_image: str = field(default="raise", metadata={"help": "'raise' or 'skip' (counted, reported) unreadable images or audio files."})
    convert_channels: bool = field(default=False, metadata={"help": "Convert gray <-> RGB (stereo -> mono) instead of refusing."})
    num_examples: int = field(default=16, metadata={"help": "Images in each reconstruction PNG (audio: up to 4 WAV pairs)."})
    segment_length: int = field(default=16384, metadata={"help": "Audio: samples per training crop (a multiple of the stride)."})
    eval_segment_length: int = field(default=32768, metadata={"help": "Audio: samples per held-out crop (the middle of each utterance)."})
    speech_sentences: int | None = field(default=None, metadata={"help": "'speech': training sentences per speaker (default 200)."})
    speech_speakers: str | None = field(default=None, metadata={"help": "'speech': a comma-separated subset of the built-in voices."})


def _limit(dataset, limit):
    return dataset if limit is None or limit >= len(dataset) else Subset(dataset, range(limit))


def build_datasets(data: DataArguments, model_args: ModelArguments):
    """(train, eval) datasets of {"pixel_values", "label"} shaped for the model (audio: of
    {"input_values", "speaker"}, fixed-length crops)."""
    if model_args.modality == "audio":
        return build_audio_datasets(data, model_args)
    if data.dataset == "speech":
        raise ValueError("--dataset speech is audio: pass --modality audio (recipes/speech.yaml does).")
    size, channels = model_args.image_size, model_args.in_channels
    if data.dataset == "fashion_mnist":
        if channels != 1 or size != 28:
            raise ValueError(
                f"Fashion-MNIST images are 1 x 28 x 28, but the model expects {channels} x {size} x {size}: "
                "pass --in_channels 1 --image_size 28."
            )
        return FashionMNIST("train", limit=data.train_limit), FashionMNIST("test", limit=data.eval_limit)
    if data.dataset == "vizdoom":
        if channels != 3:
            raise ValueError(f"ViZDoom frames are RGB, but the model expects {channels} channel(s): pass --in_channels 3.")
        train, held_out = VizDoomFrames("train", size=size), VizDoomFrames("test", size=size)
        return _limit(train, data.train_limit), _limit(held_out, data.eval_limit)
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


def build_audio_sources(data: DataArguments, model_args: ModelArguments, split: str | None = None):
    """(train, held-out) utterance datasets of {"input_values" (1, T), "speaker"}, whole and of
    any length; both carry `.sampling_rate` and `.speakers`. With `split` ("train" or "test"),
    only that one (the code-extraction CLI's need)."""
    rate = model_args.sampling_rate
    options = {"on_bad_audio": data.on_bad_image, "mix_to_mono": data.convert_channels}
    if data.dataset in ("fashion_mnist", "photos", "vizdoom"):
        raise ValueError(f"--dataset {data.dataset} holds images; for --modality audio use 'speech', an audio folder or a hub audio dataset.")
    if data.dataset == "speech":
        speakers = [name.strip() for name in data.speech_speakers.split(",")] if data.speech_speakers else None
        train = SyntheticSpeech("train", rate, num_sentences=data.speech_sentences, speakers=speakers) if split != "test" else None
        # the test split's size is fixed, except when only it is asked for (encoding it)
        held_sentences = data.speech_sentences if split == "test" else None
        held_out = SyntheticSpeech("test", rate, num_sentences=held_sentences, speakers=speakers) if split != "train" else None
        return train, held_out
    if Path(data.dataset).is_dir():  # a local folder: hold out eval_limit utterances, fixed by the seed
        full = load_audio_folder(data.dataset, rate, **options)
        held = min(data.eval_limit or max(1, len(full) // 10), len(full) - 1)
        order = torch.randperm(len(full), generator=torch.Generator().manual_seed(0)).tolist()
        train, held_out = Subset(full, order[held:]), Subset(full, order[:held])
        for part in (train, held_out):  # what AudioCrops and the model's config read
            part.sampling_rate, part.speakers = full.sampling_rate, full.speakers
        return train, held_out
    train = load_hub_audio_dataset(data.dataset, data.train_split, rate, **options) if split != "test" else None
    held_out = load_hub_audio_dataset(data.dataset, data.eval_split, rate, **options) if split != "train" else None
    if train is not None and held_out is not None and model_args.speaker_conditioning and train.speakers != held_out.speakers:
        raise ValueError(
            f"the {data.train_split!r} and {data.eval_split!r} splits of {data.dataset} name different speakers, "
            "so their ids disagree; pass --speaker_conditioning false, or use splits with the same speakers."
        )
    return train, held_out


def build_audio_datasets(data: DataArguments, model_args: ModelArguments):
    """(train, eval) crops of {"input_values" (1, length), "speaker"}: random training crops,
    held-out crops from each utterance's middle. Both carry `.speakers`, the training data's names."""
    stride = model_args.total_stride
    for name in ("segment_length", "eval_segment_length"):
        length = getattr(data, name)
        if length < stride or length % stride:
            raise ValueError(
                f"--{name} {length} must be a positive multiple of the total stride, {stride} samples per code; "
                f"use {max(stride, round(length / stride) * stride)}."
            )
    train, held_out = build_audio_sources(data, model_args)
    crops = _limit(AudioCrops(train, data.segment_length, random=True), data.train_limit)
    held_crops = _limit(AudioCrops(held_out, data.eval_segment_length, random=False), data.eval_limit)
    crops.speakers = held_crops.speakers = train.speakers
    return crops, held_crops


def make_compute_loss(use_speakers: bool):
    def compute_loss(model, batch):
        if "input_values" in batch:
            output = model(batch["input_values"], speaker=batch["speaker"] if use_speakers else None)
            metrics = {"reconstruction_loss": output.reconstruction_loss.detach()}
        else:
            output = model(batch["pixel_values"])
            metrics = {"reconstruction_mse": output.reconstruction_loss.detach()}
        metrics["quantizer_loss"] = output.quantizer_loss.detach()
        names = ["perplexity_top", "perplexity_bottom"] if len(output.perplexity) == 2 else ["perplexity"]
        metrics.update({name: value.detach() for name, value in zip(names, output.perplexity)})
        return output.loss, metrics

    return compute_loss


compute_loss = make_compute_loss(use_speakers=False)  # images


def summarize_usage(usages: list[CodebookUsage], config: VQVAEConfig, metrics: dict) -> dict:
    """Adds each level's codebook share used and perplexity to `metrics` (a collective: every
    rank calls it); returns the code counts per level name, for the usage plot."""
    names = ["top", "bottom"] if config.num_levels == 2 else [config.quantizer]
    counts = {}
    for name, usage in zip(names, usages):
        suffix = f"_{name}" if config.num_levels == 2 else ""
        metrics[f"codebook_used{suffix}"], metrics[f"perplexity{suffix}"], counts[name] = usage.summarize()
    return counts


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
        counts = summarize_usage(usages, unwrapped.config, metrics)
        if accelerator.is_main_process:
            examples = torch.stack([eval_dataset[i]["pixel_values"] for i in range(min(data.num_examples, len(eval_dataset)))])
            with torch.no_grad():
                reconstructions = unwrapped.decode(unwrapped.encode(examples.to(accelerator.device)))
            save_image_grid([examples, reconstructions.cpu()], output_dir / "samples" / f"reconstructions-step-{step:07d}.png")
            plot_codebook_usage(counts, output_dir / "codebook_usage.png")
        return metrics

    return evaluate


def make_audio_evaluate(eval_dataset, data: DataArguments, output_dir: Path, config: VQVAEConfig):
    """Held-out reconstruction over the eval crops (sharded over processes, summed with reduce):
    the log-mel distance of decode(encode(x)) for the conv decoder, the teacher-forced NLL in
    nats per sample for the WaveNet decoder (whose sampled decoding is too slow for a whole
    split); codebook usage and perplexity. On the main process: WAV files of a few originals and
    reconstructions (WaveNet: sampled with the cache, first half second) and their spectrograms."""
    rate, use_speakers = config.sampling_rate, bool(config.speakers)
    wavenet = config.audio_decoder == "wavenet"

    def batch_of(indices, device):
        items = [eval_dataset[i] for i in indices]
        waves = torch.stack([item["input_values"] for item in items]).to(device)
        speaker = torch.stack([item["speaker"] for item in items]).to(device) if use_speakers else None
        return waves, speaker

    def evaluate(model, accelerator, step):
        unwrapped = accelerator.unwrap_model(model)
        shard = range(accelerator.process_index, len(eval_dataset), accelerator.num_processes)
        usages = [CodebookUsage(config.codebook_size) for _ in range(config.num_levels)]
        total = torch.zeros((), device=accelerator.device)
        with torch.no_grad():
            for start in range(0, len(shard), 16):
                waves, speaker = batch_of(shard[start : start + 16], accelerator.device)
                if wavenet:
                    output = unwrapped(waves, speaker)
                    codes = output.codes
                    total += output.reconstruction_loss * len(waves)
                else:
                    codes = unwrapped.encode(waves)
                    total += log_mel_distance(unwrapped.decode(codes, speaker), waves, rate).sum()
                for usage, level_codes in zip(usages, codes):
                    usage.update(level_codes)
        total = accelerator.reduce(total, reduction="sum").item()
        metrics = {("nll_per_sample" if wavenet else "log_mel_distance"): total / len(eval_dataset)}
        counts = summarize_usage(usages, config, metrics)
        if accelerator.is_main_process:
            waves, speaker = batch_of(range(min(data.num_examples, 4, len(eval_dataset))), accelerator.device)
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


def parse_args(argv=None):
    """Flags, or a YAML/JSON recipe followed by flags that override it."""
    return parse_recipe_args((ModelArguments, DataArguments, TrainingConfig), argv)


def main(argv=None) -> tuple[VQVAEModel, dict]:
    """Parses the arguments, trains, and returns the trained model and its last evaluation."""
    model_args, data_args, training = parse_args(argv)
    model_args.to_config()  # bad model flags fail here, before any data is read
    if data_args.on_bad_image not in ("raise", "skip"):
        raise ValueError(f"--on_bad_image must be 'raise' or 'skip', got {data_args.on_bad_image!r}.")
    train_dataset, eval_dataset = build_datasets(data_args, model_args)
    config = model_args.to_config(speakers=getattr(train_dataset, "speakers", None))
    torch.manual_seed(training.seed)
    model = VQVAEModel(config)
    output_dir = Path(training.output_dir)
    if config.modality == "audio":
        evaluate = make_audio_evaluate(eval_dataset, data_args, output_dir, config)
    else:
        evaluate = make_evaluate(eval_dataset, data_args, output_dir, config.codebook_size)
    metrics = train(
        model,
        train_dataset,
        training,
        compute_loss=make_compute_loss(use_speakers=bool(config.speakers)),
        evaluate=evaluate,
        run_config={**asdict(model_args), **asdict(data_args)},
    )
    return model, metrics


if __name__ == "__main__":
    main()
