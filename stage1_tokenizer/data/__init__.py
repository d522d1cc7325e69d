"""Data sources for stage one. Offline built-ins: Fashion-MNIST from Debian's idx files and crops of
scikit-image's photos; any Hugging Face image dataset or local image folder through `ImageDataset`."""

from .fashion_mnist import FASHION_MNIST_LABELS, FashionMNIST, load_fashion_mnist
from .images import (
    ImageDataset,
    PhotoCrops,
    available_photos,
    check_divisible,
    load_hub_image_dataset,
    load_image_folder,
)

__all__ = [
    "FASHION_MNIST_LABELS",
    "FashionMNIST",
    "ImageDataset",
    "PhotoCrops",
    "available_photos",
    "check_divisible",
    "load_fashion_mnist",
    "load_hub_image_dataset",
    "load_image_folder",
]
