"""Data sources for stage one. Offline built-ins: Fashion-MNIST from Debian's idx files."""

from .fashion_mnist import FASHION_MNIST_LABELS, load_fashion_mnist

__all__ = ["FASHION_MNIST_LABELS", "load_fashion_mnist"]
