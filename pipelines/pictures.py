"""Pictures of a bundle's outputs, for its web page (`pipelines.app`) and its model card
(`pipelines.hub`): a grid of generated images, and the mel spectrograms of waveforms."""

from __future__ import annotations

import math

import numpy as np
import torch
import torchaudio
from PIL import Image

MIN_CELL = 64  # tiny images (28x28) are enlarged, with hard pixel edges, to be seen on a card


def image_grid(images: list[Image.Image], columns: int, gap: int = 2) -> Image.Image:
    """Equal-sized PIL images laid out row by row, `columns` per row, on a white background."""
    width, height = images[0].size
    scale = max(1, math.ceil(MIN_CELL / max(width, height)))
    cell_w, cell_h = width * scale, height * scale
    rows = math.ceil(len(images) / columns)
    grid = Image.new("RGB", (columns * (cell_w + gap) - gap, rows * (cell_h + gap) - gap), "white")
    for index, image in enumerate(images):
        cell = image.convert("RGB").resize((cell_w, cell_h), Image.NEAREST)
        grid.paste(cell, ((index % columns) * (cell_w + gap), (index // columns) * (cell_h + gap)))
    return grid


def log_mel(audio: np.ndarray, sampling_rate: int, mels: int = 64) -> np.ndarray:
    """(mels, frames) log-mel power in dB, 25 ms windows every 10 ms."""
    window = 2 ** math.ceil(math.log2(0.025 * sampling_rate))
    transform = torchaudio.transforms.MelSpectrogram(
        sample_rate=sampling_rate, n_fft=window, win_length=window, hop_length=max(1, sampling_rate // 100), n_mels=mels
    )
    power = transform(torch.as_tensor(audio, dtype=torch.float32))
    return (10 * torch.log10(power + 1e-10)).numpy()


def spectrogram_picture(clips: list[tuple[str, np.ndarray]], sampling_rate: int) -> Image.Image:
    """One titled mel spectrogram per (title, waveform), stacked top to bottom, as a PIL image."""
    # matplotlib's object API with its Agg canvas: no pyplot state, safe in the app's worker threads
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 2.1 * len(clips)), dpi=100, layout="constrained")
    axes = figure.subplots(len(clips), 1, squeeze=False)[:, 0]
    for ax, (title, audio) in zip(axes, clips):
        spectrum = log_mel(audio, sampling_rate)
        seconds = len(audio) / sampling_rate
        top = spectrum.max()
        ax.imshow(spectrum, origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top, extent=(0, seconds, 0, spectrum.shape[0]))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("seconds")
        ax.set_ylabel("mel band")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
