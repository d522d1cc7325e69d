"""A speaker judge for voice conversion, independent of the tokenizer: a nearest-class-mean
classifier on standardized statistics of log-mel spectrograms, fitted on real utterances of each
speaker. It answers "does converted speech sound like the target speaker?".
"""

from __future__ import annotations

import math

import torch

from ..audio_features import log_mel_spectrogram

def mel_statistics(waveform: torch.Tensor, sampling_rate: int, dynamic_range: float = 40.0) -> torch.Tensor:
    """(B, 1, T) -> (B, 2 * 80): the mean and standard deviation over time of each log-mel band.

    Only what identifies a voice: each spectrogram is floored `dynamic_range` dB below its peak
    (a codec's faint noise floor and digital silence then look alike), only frames within 35 dB of
    the loudest count (pauses say nothing about the speaker), and the band means are taken
    relative to their average (loudness is no identity either)."""
    log_mel = log_mel_spectrogram(waveform, sampling_rate)  # (B, M, frames)
    peak = log_mel.amax(dim=(1, 2), keepdim=True)
    log_mel = torch.maximum(log_mel, peak - dynamic_range / 10 * math.log(10))
    energy = log_mel.logsumexp(dim=1)  # (B, frames)
    voiced = (energy > energy.amax(dim=1, keepdim=True) - 3.5 * math.log(10)).float().unsqueeze(1)
    count = voiced.sum(-1).clamp_min(1.0)
    mean = (log_mel * voiced).sum(-1) / count
    variance = (((log_mel - mean.unsqueeze(-1)) ** 2) * voiced).sum(-1) / count
    return torch.cat([mean - mean.mean(dim=1, keepdim=True), variance.sqrt()], dim=1)


class SpeakerClassifier:
    """A simple speaker classifier: nearest class mean of standardized mel statistics. Used as
    the judge of voice conversion (does converted speech sound like the target speaker?)."""

    def __init__(self, sampling_rate: int):
        self.sampling_rate = sampling_rate
        self.centroids = self.mean = self.scale = None

    def fit(self, waveforms: list[torch.Tensor], speakers: list[int]) -> SpeakerClassifier:
        features = torch.cat([mel_statistics(w.reshape(1, 1, -1), self.sampling_rate) for w in waveforms])
        speakers = torch.as_tensor(speakers)
        self.mean, self.scale = features.mean(0), features.std(0).clamp_min(1e-3)
        standardized = (features - self.mean) / self.scale
        self.classes = speakers.unique()
        self.centroids = torch.stack([standardized[speakers == s].mean(0) for s in self.classes])
        return self

    def predict(self, waveforms: list[torch.Tensor]) -> torch.Tensor:
        if self.centroids is None:
            raise RuntimeError("call fit(waveforms, speakers) before predict.")
        features = torch.cat([mel_statistics(w.reshape(1, 1, -1), self.sampling_rate) for w in waveforms])
        distances = torch.cdist((features - self.mean) / self.scale, self.centroids)
        return self.classes[distances.argmin(dim=1)]
