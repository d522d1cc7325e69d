"""Data sources for stage one, each a map-style dataset of `{"pixel_values", "label"}` (images and
frames) or `{"input_values", "speaker"}` (audio).

- offline built-ins: `FashionMNIST` (Debian's idx files), `PhotoCrops` (scikit-image's photos),
  `SyntheticSpeech` (an espeak-ng corpus), `VizDoomFrames` (first-person frames);
- any image or audio dataset: `ImageDataset` / `AudioDataset` over a `datasets` dataset, local
  folders (`load_image_folder`, `load_audio_folder`) and Hub datasets (`load_hub_image_dataset`,
  `load_hub_audio_dataset`); `GymnasiumFrames` and `FrameArrays` for recorded frames;
- `build_datasets(DataArguments, config)`: the `--dataset` routing of the training and encoding
  commands.
"""

from .audio import AudioCrops, AudioDataset, load_audio_folder, load_hub_audio_dataset, read_audio
from .fashion_mnist import FASHION_MNIST_LABELS, FashionMNIST, load_fashion_mnist
from .frames import FrameArrays, GymnasiumFrames
from .images import ImageDataset, load_hub_image_dataset, load_image_folder
from .media import BadFileError
from .photos import PhotoCrops, available_photos
from .sources import DataArguments, build_audio_sources, build_datasets
from .speech_corpus import SYNTHETIC_SPEAKERS, SyntheticSpeech, synthetic_sentences
from .vizdoom import DEFAULT_VIZDOOM_SCENARIOS, VIZDOOM_SCENARIOS, VizDoomFrames

__all__ = [
    "DEFAULT_VIZDOOM_SCENARIOS",
    "FASHION_MNIST_LABELS",
    "SYNTHETIC_SPEAKERS",
    "VIZDOOM_SCENARIOS",
    "AudioCrops",
    "AudioDataset",
    "BadFileError",
    "DataArguments",
    "FashionMNIST",
    "FrameArrays",
    "GymnasiumFrames",
    "ImageDataset",
    "PhotoCrops",
    "SyntheticSpeech",
    "VizDoomFrames",
    "available_photos",
    "build_audio_sources",
    "build_datasets",
    "load_audio_folder",
    "load_fashion_mnist",
    "load_hub_audio_dataset",
    "load_hub_image_dataset",
    "load_image_folder",
    "read_audio",
    "synthetic_sentences",
]
