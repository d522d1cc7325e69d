"""From a `--dataset` name to datasets shaped for a tokenizer: the routing that stage one's
training and encoding commands share.

`DataArguments` are the data options of both commands; `build_datasets(data, config)` returns
(train, held-out) datasets for the model `config` describes: images `{"pixel_values", "label"}`,
or fixed-length audio crops `{"input_values", "speaker"}`; `build_audio_sources(data, config)`
returns whole utterances, the form encoding needs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from torch.utils.data import Subset

from .audio import AudioCrops, load_audio_folder, load_hub_audio_dataset
from .fashion_mnist import FashionMNIST
from .hf_datasets import load_hub_split
from .images import ImageDataset, load_hub_image_dataset, load_image_folder
from .photos import PhotoCrops
from .speech_corpus import SyntheticSpeech
from .vizdoom import VizDoomFrames

logger = logging.getLogger(__name__)

BUILT_IN_IMAGES = ("fashion_mnist", "photos", "vizdoom")
BUILT_IN_AUDIO = ("speech",)
BAD_FILE_POLICIES = ("raise", "skip")
# A local folder's held-out share, with a floor: enough examples for a stable evaluation.
HELD_OUT_FRACTION, HELD_OUT_FLOOR = 0.05, 1


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
    train_limit: int | None = field(default=None, metadata={"help": "Use only the first N training examples."})
    eval_limit: int | None = field(
        default=2000,
        metadata={"help": "Evaluate on at most N held-out examples (a local folder holds out 5 percent of its files, at most N)."},
    )
    num_crops: int = field(default=20000, metadata={"help": "'photos': crops in the training split."})
    on_bad_file: str = field(default="raise", metadata={"help": "'raise' or 'skip' (counted, reported) unreadable image or audio files."})
    convert_channels: bool = field(default=False, metadata={"help": "Images: convert gray <-> RGB instead of refusing."})
    mix_to_mono: bool = field(default=False, metadata={"help": "Audio: average the channels of multi-channel files instead of refusing."})
    num_examples: int = field(default=16, metadata={"help": "Images in each reconstruction PNG (audio: up to 4 WAV pairs)."})
    segment_length: int = field(default=16384, metadata={"help": "Audio: samples per training crop (a multiple of the stride)."})
    eval_segment_length: int = field(default=32768, metadata={"help": "Audio: samples per held-out crop (the middle of each utterance)."})
    speech_sentences: int | None = field(default=None, metadata={"help": "'speech': training sentences per speaker (default 200)."})
    speech_speakers: list[str] | None = field(default=None, metadata={"help": "'speech': a subset of the built-in voices."})
    speaker_conditioning: bool = field(default=True, metadata={"help": "Audio: condition the decoder on the data's speakers."})
    streaming: bool = field(
        default=False,
        metadata={"help": "Images from the Hub (or a local folder): stream them, split between the processes, instead of downloading the dataset first."},
    )
    shuffle_buffer: int = field(
        default=0,
        metadata={"help": "Streaming: shuffle the shards' order and examples in a buffer of this many (0: the stored order, which resume continues exactly; a buffer's examples are lost on resume)."},
    )

    def __post_init__(self):
        if self.on_bad_file not in BAD_FILE_POLICIES:
            raise ValueError(f"--on_bad_file must be 'raise' or 'skip', got {self.on_bad_file!r}.")
        for name in ("train_limit", "eval_limit", "speech_sentences"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be a positive number (or omitted for all), got {value}.")
        if self.shuffle_buffer < 0:
            raise ValueError(f"--shuffle_buffer must be >= 0, got {self.shuffle_buffer}.")
        for name in ("num_crops", "num_examples", "segment_length", "eval_segment_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}.")


def _limit(dataset, limit):
    return dataset if limit is None or limit >= len(dataset) else Subset(dataset, range(limit))


def held_out_split(num_examples: int, eval_limit: int | None, name: str) -> tuple[list[int], list[int]]:
    """(train, held-out) indices of a local folder: a fixed random 5% held out (at most
    `eval_limit`, at least one example), the rest trained on."""
    if num_examples < 2:
        raise ValueError(f"{name} holds {num_examples} example(s); it needs at least 2, one to train on and one to hold out.")
    held = max(HELD_OUT_FLOOR, math.ceil(HELD_OUT_FRACTION * num_examples))
    if eval_limit is not None:
        held = min(held, eval_limit)
    held = min(held, num_examples - 1)
    if num_examples < 40:
        logger.warning("%s holds only %d examples: holding out %d, training on %d.", name, num_examples, held, num_examples - held)
    order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(0)).tolist()
    return order[held:], order[:held]


def check_dataset_name(data: DataArguments, modality: str) -> None:
    """Refuses a built-in dataset of the other modality, naming the fix."""
    if modality == "audio" and data.dataset in BUILT_IN_IMAGES:
        raise ValueError(f"--dataset {data.dataset} holds images; for an audio tokenizer use 'speech', an audio folder or a hub audio dataset.")
    if modality == "image" and data.dataset in BUILT_IN_AUDIO:
        raise ValueError(f"--dataset {data.dataset} is audio: set the model's modality to audio (--model.modality audio; recipes/speech.yaml does).")


def build_datasets(data: DataArguments, config, seed: int = 0):
    """(train, eval) datasets of {"pixel_values", "label"} shaped for the tokenizer `config`
    describes (audio: of {"input_values", "speaker"}, fixed-length crops, random ones drawn from
    `seed`)."""
    check_dataset_name(data, config.modality)
    if config.modality == "audio":
        return build_audio_datasets(data, config, seed)
    size, channels = config.image_size, config.in_channels
    if data.dataset == "fashion_mnist":
        if channels != 1 or size != 28:
            raise ValueError(
                f"Fashion-MNIST images are 1 x 28 x 28, but the model expects {channels} x {size} x {size}: "
                "pass --model.in_channels 1 --model.image_size 28."
            )
        return FashionMNIST("train", limit=data.train_limit), FashionMNIST("test", limit=data.eval_limit)
    if data.dataset == "vizdoom":
        if channels != 3:
            raise ValueError(f"ViZDoom frames are RGB, but the model expects {channels} channel(s): pass --model.in_channels 3.")
        train, held_out = VizDoomFrames("train", size=size), VizDoomFrames("test", size=size)
        return _limit(train, data.train_limit), _limit(held_out, data.eval_limit)
    if data.dataset == "photos":
        train = PhotoCrops(size, data.num_crops, "train", seed=0, channels=channels)
        held_out = PhotoCrops(size, data.eval_limit or 1000, "test", seed=1, channels=channels)
        return _limit(train, data.train_limit), held_out
    options = {"on_bad_image": data.on_bad_file, "convert_channels": data.convert_channels}
    if data.streaming:
        return build_streamed_images(data, config, seed, options)
    if Path(data.dataset).is_dir():
        full = load_image_folder(data.dataset, size, channels, **options)
        train, held_out = held_out_split(len(full), data.eval_limit, f"image folder {data.dataset}")
        return _limit(Subset(full, train), data.train_limit), Subset(full, held_out)
    train = load_hub_image_dataset(data.dataset, data.train_split, size, channels, **options)
    held_out = load_hub_image_dataset(data.dataset, data.eval_split, size, channels, **options)
    return _limit(train, data.train_limit), _limit(held_out, data.eval_limit)


def build_streamed_images(data: DataArguments, config, seed: int, options: dict):
    """(train, held-out) for `--streaming`: the training stream (shuffled with `--shuffle_buffer`),
    split between the processes (`split_dataset_by_node`) and decoded as it comes; the
    held-out examples, at most `eval_limit` of them, decoded into memory. A local folder streams
    too, its first `eval_limit` files held out."""
    from datasets.distributed import split_dataset_by_node

    from ..common.training import process_position
    from .media import StreamedMedia

    size, channels = config.image_size, config.in_channels
    local = Path(data.dataset).is_dir()
    if local:
        stream = datasets.load_dataset("imagefolder", data_dir=data.dataset, split="train", streaming=True)
        held_rows, train_stream = stream.take(data.eval_limit or 100), stream.skip(data.eval_limit or 100)
    else:
        local_alternative = "a local folder of images with --dataset DIR"
        train_stream = load_hub_split(data.dataset, data.train_split, {"streaming": True}, local_alternative)
        held_rows = load_hub_split(data.dataset, data.eval_split, {"streaming": True}, local_alternative).take(data.eval_limit or 2000)
    if data.train_limit is not None:
        train_stream = train_stream.take(data.train_limit)
    rank, world = process_position()
    if data.shuffle_buffer > 0:  # reseeded each epoch (set_epoch); datasets does not save a buffer's examples
        train_stream = train_stream.shuffle(seed=seed, buffer_size=data.shuffle_buffer)
    train_stream = split_dataset_by_node(train_stream, rank, world)
    train = StreamedMedia(ImageDataset(train_stream, size, channels, **options))
    held = ImageDataset(held_rows, size, channels, **options)
    return train, HeldOutImages(held._load(position, row) for position, row in enumerate(held._rows))


class HeldOutImages(torch.utils.data.Dataset):
    """Decoded held-out images kept in memory as 8 bits (what they were decoded from), at most
    `--eval_limit` of them: a streamed split's held-out examples, read once."""

    def __init__(self, items):
        items = list(items)
        self.pixels = torch.stack([(item["pixel_values"] * 255).round().to(torch.uint8) for item in items])
        self.labels = torch.stack([item["label"] for item in items])

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, index):
        return {"pixel_values": self.pixels[index].float() / 255, "label": self.labels[index]}


def build_audio_sources(data: DataArguments, config, split: str | None = None):
    """(train, held-out) utterance datasets of {"input_values" (1, T), "speaker"}, whole and of
    any length; both carry `.sampling_rate` and `.speakers`. With `split` ("train" or "test"),
    only that one (the other is None): what encoding needs."""
    check_dataset_name(data, "audio")
    rate = config.sampling_rate
    options = {"on_bad_audio": data.on_bad_file, "mix_to_mono": data.mix_to_mono}
    if data.dataset == "speech":
        speakers = data.speech_speakers or (config.speakers or None)
        train = SyntheticSpeech("train", rate, num_sentences=data.speech_sentences, speakers=speakers) if split != "test" else None
        # the test split's size is fixed, except when only it is asked for (encoding it)
        held_sentences = data.speech_sentences if split == "test" else None
        held_out = SyntheticSpeech("test", rate, num_sentences=held_sentences, speakers=speakers) if split != "train" else None
        return train, held_out
    if Path(data.dataset).is_dir():
        full = load_audio_folder(data.dataset, rate, **options)
        train_rows, held_rows = held_out_split(len(full), data.eval_limit, f"audio folder {data.dataset}")
        train, held_out = Subset(full, train_rows), Subset(full, held_rows)
        for part in (train, held_out):  # what AudioCrops and the model's config read
            part.sampling_rate, part.speakers = full.sampling_rate, full.speakers
        return (None if split == "test" else train), (None if split == "train" else held_out)
    train = load_hub_audio_dataset(data.dataset, data.train_split, rate, **options) if split != "test" else None
    held_out = load_hub_audio_dataset(data.dataset, data.eval_split, rate, **options) if split != "train" else None
    if train is not None and held_out is not None and data.speaker_conditioning and train.speakers != held_out.speakers:
        raise ValueError(
            f"the {data.train_split!r} and {data.eval_split!r} splits of {data.dataset} name different speakers, "
            "so their ids disagree; pass --speaker_conditioning false, or use splits with the same speakers."
        )
    return train, held_out


def build_audio_datasets(data: DataArguments, config, seed: int = 0):
    """(train, eval) crops of {"input_values" (1, length), "speaker"}: random training crops,
    held-out crops from each utterance's middle. Both carry `.speakers`, the training data's names."""
    stride = config.total_stride
    for name in ("segment_length", "eval_segment_length"):
        length = getattr(data, name)
        if length < stride or length % stride:
            raise ValueError(
                f"--{name} {length} must be a positive multiple of the total stride, {stride} samples per code; "
                f"use {max(stride, round(length / stride) * stride)}."
            )
    train, held_out = build_audio_sources(data, config)
    crops = _limit(AudioCrops(train, data.segment_length, random=True, seed=seed), data.train_limit)
    held_crops = _limit(AudioCrops(held_out, data.eval_segment_length, random=False), data.eval_limit)
    crops.speakers = held_crops.speakers = train.speakers
    return crops, held_crops
