"""Outputs people look at: PNG image grids (samples, reconstructions), codebook-usage plots,
WAV files and log-mel spectrogram PNGs of audio; each written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .files import atomic_file


def save_image_grid(rows: list[torch.Tensor], path: str | Path, padding: int = 2, scale: int = 2) -> Path:
    """Writes a PNG with one row per tensor in `rows`, each (N, C, H, W) with values in [0, 1]."""
    if not rows:
        raise ValueError("save_image_grid needs at least one row of images.")
    channels, height, width = rows[0].shape[1:]
    columns = max(r.shape[0] for r in rows)
    grid = np.ones(
        (len(rows) * (height + padding) + padding, columns * (width + padding) + padding, 3), dtype=np.uint8
    ) * 255
    for i, row in enumerate(rows):
        images = row.detach().float().clamp(0, 1).cpu()
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        images = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        for j, image in enumerate(images):
            top, left = padding + i * (height + padding), padding + j * (width + padding)
            grid[top : top + height, left : left + width] = image
    picture = Image.fromarray(grid)
    if scale != 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    with atomic_file(path) as tmp:
        picture.save(tmp, format="PNG")
    return Path(path)


def plot_codebook_usage(counts: dict[str, torch.Tensor], path: str | Path) -> Path:
    """One curve per name: code counts sorted from most to least used (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for name, values in counts.items():
        ordered = torch.sort(values.float(), descending=True).values.numpy()
        used = int((ordered > 0).sum())
        axis.plot(np.arange(1, len(ordered) + 1), np.maximum(ordered, 0.5), label=f"{name} ({used}/{len(ordered)} used)")
    axis.set_yscale("log")
    axis.set_xlabel("code rank")
    axis.set_ylabel("assignments (test split)")
    axis.set_title("Codebook usage")
    axis.legend()
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)
    return Path(path)


def save_wav(waveform: torch.Tensor, path: str | Path, sampling_rate: int) -> Path:
    """Writes a mono waveform ((1, T) or (T,), values in [-1, 1]) as 16-bit PCM WAV, atomically."""
    import soundfile

    samples = waveform.detach().float().reshape(-1).clamp(-1, 1).cpu().numpy()
    with atomic_file(path) as tmp:
        soundfile.write(tmp, samples, sampling_rate, subtype="PCM_16", format="WAV")
    return Path(path)


def plot_spectrograms(rows: dict[str, list[torch.Tensor]], path: str | Path, sampling_rate: int) -> Path:
    """A PNG of log-mel spectrograms: one row per name (e.g. "original", "reconstruction"), one
    column per waveform."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..audio_features import log_mel_spectrogram

    columns = max(len(waves) for waves in rows.values())
    figure, axes = plt.subplots(len(rows), columns, figsize=(3 * columns, 2.2 * len(rows)), squeeze=False)
    for i, (name, waves) in enumerate(rows.items()):
        for j in range(columns):
            axis = axes[i][j]
            axis.set_xticks([])
            axis.set_yticks([])
            if j < len(waves):
                mel = log_mel_spectrogram(waves[j].detach().float().reshape(1, -1).cpu(), sampling_rate)[0]
                axis.imshow(mel.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=-11.5, vmax=max(2.0, mel.max().item()))
            if j == 0:
                axis.set_ylabel(name)
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    return Path(path)
