"""Signal tools of the speech tokenizer: mu-law companding (the WaveNet decoder's 256-way output),
log-mel spectrograms, the multi-resolution STFT loss of the fast convolutional decoder, and the
log-mel distance used to measure reconstructions.

mu-law (ITU-T G.711, as in WaveNet section 2.2), for x in [-1, 1] and mu = channels - 1:

    f(x) = sign(x) ln(1 + mu |x|) / ln(1 + mu),   class = round((f(x) + 1) / 2 * mu)

Multi-resolution STFT loss (Yamamoto et al. 2020, "Parallel WaveGAN", equations 4-6), averaged
over the resolutions, with S = |STFT| of the target y and the prediction y':

    L_sc  = ||S - S'||_F / ||S||_F                  (spectral convergence)
    L_mag = mean |log S - log S'|                   (log STFT magnitude)
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
import torchaudio.functional as AF

_LOG_FLOOR = 1e-5  # keeps log() finite on silence


# -- mu-law ---------------------------------------------------------------------------------------
def mu_law_encode(waveform: torch.Tensor, channels: int = 256) -> torch.Tensor:
    """Float samples in [-1, 1] (clamped) -> LongTensor classes in [0, channels - 1]."""
    mu = channels - 1
    x = waveform.clamp(-1.0, 1.0)
    companded = torch.sign(x) * torch.log1p(mu * x.abs()) / torch.log1p(torch.tensor(float(mu)))
    return ((companded + 1) / 2 * mu + 0.5).long()


def mu_law_decode(classes: torch.Tensor, channels: int = 256) -> torch.Tensor:
    """Classes in [0, channels - 1] -> float samples in [-1, 1] (the inverse of mu_law_encode up to
    its quantization)."""
    mu = channels - 1
    companded = 2 * classes.float() / mu - 1
    return torch.sign(companded) * torch.expm1(companded.abs() * torch.log1p(torch.tensor(float(mu)))) / mu


# -- spectra ---------------------------------------------------------------------------------------
def stft_magnitude(waveform: torch.Tensor, fft_size: int, hop: int) -> torch.Tensor:
    """(B, 1, T) or (B, T) -> |STFT| (B, fft_size // 2 + 1, frames), Hann window of fft_size."""
    waveform = waveform.reshape(-1, waveform.shape[-1]).float()
    window = torch.hann_window(fft_size, device=waveform.device)
    # zero padding at the edges (reflection needs clips longer than half a window)
    spectrum = torch.stft(waveform, fft_size, hop, window=window, center=True, pad_mode="constant", return_complex=True)
    return spectrum.abs()


@functools.lru_cache(maxsize=8)
def _mel_filters(fft_size: int, num_mels: int, sampling_rate: int) -> torch.Tensor:
    return AF.melscale_fbanks(fft_size // 2 + 1, 0.0, sampling_rate / 2, num_mels, sampling_rate, norm="slaney", mel_scale="slaney")


def log_mel_spectrogram(
    waveform: torch.Tensor, sampling_rate: int, fft_size: int = 1024, hop: int = 256, num_mels: int = 80
) -> torch.Tensor:
    """(B, 1, T) or (B, T) -> natural-log mel power spectrogram (B, num_mels, frames)."""
    power = stft_magnitude(waveform, fft_size, hop) ** 2
    mel = torch.einsum("bft,fm->bmt", power, _mel_filters(fft_size, num_mels, sampling_rate).to(power.device))
    return torch.log(mel.clamp_min(_LOG_FLOOR))


def log_mel_distance(prediction: torch.Tensor, target: torch.Tensor, sampling_rate: int) -> torch.Tensor:
    """Mean absolute difference of the log-mel spectrograms, per example (B,): the reconstruction
    measure of the speech tokenizer (0 for identical audio; natural-log units)."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} must have one shape.")
    difference = log_mel_spectrogram(prediction, sampling_rate) - log_mel_spectrogram(target, sampling_rate)
    return difference.abs().mean(dim=(1, 2))


def multi_resolution_stft_loss(prediction: torch.Tensor, target: torch.Tensor, resolutions) -> torch.Tensor:
    """Spectral convergence + log-magnitude distance, averaged over the STFT resolutions
    ((fft size, hop) pairs; windows span the fft size) (scalar)."""
    total = 0.0
    for fft_size, hop in resolutions:
        predicted, wanted = stft_magnitude(prediction, fft_size, hop), stft_magnitude(target, fft_size, hop)
        convergence = torch.linalg.norm(wanted - predicted) / torch.linalg.norm(wanted).clamp_min(_LOG_FLOOR)
        magnitude = F.l1_loss(torch.log(predicted.clamp_min(_LOG_FLOOR)), torch.log(wanted.clamp_min(_LOG_FLOOR)))
        total = total + convergence + magnitude
    return total / len(resolutions)
