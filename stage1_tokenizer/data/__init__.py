"""Data sources for stage one. Offline built-ins: Fashion-MNIST from Debian's idx files and crops of
scikit-image's photos; any Hugging Face image dataset or local image folder through `ImageDataset`."""

from .audio import (
    SYNTHETIC_SPEAKERS,
    AudioCrops,
    AudioDataset,
    SyntheticSpeech,
    load_audio_folder,
    load_hub_audio_dataset,
    read_audio,
    synthetic_sentences,
)
from .fashion_mnist import FASHION_MNIST_LABELS, FashionMNIST, load_fashion_mnist
from .frames import (
    DEFAULT_VIZDOOM_SCENARIOS,
    VIZDOOM_SCENARIOS,
    FrameArrays,
    GymnasiumFrames,
    VizDoomFrames,
)
from .images import (
    ImageDataset,
    PhotoCrops,
    available_photos,
    check_divisible,
    load_hub_image_dataset,
    load_image_folder,
)

__all__ = [
    "DEFAULT_VIZDOOM_SCENARIOS",
    "FASHION_MNIST_LABELS",
    "SYNTHETIC_SPEAKERS",
    "VIZDOOM_SCENARIOS",
    "AudioCrops",
    "AudioDataset",
    "FashionMNIST",
    "FrameArrays",
    "GymnasiumFrames",
    "ImageDataset",
    "PhotoCrops",
    "SyntheticSpeech",
    "VizDoomFrames",
    "available_photos",
    "check_divisible",
    "load_audio_folder",
    "load_fashion_mnist",
    "load_hub_audio_dataset",
    "load_hub_image_dataset",
    "load_image_folder",
    "read_audio",
    "synthetic_sentences",
]
