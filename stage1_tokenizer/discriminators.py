"""HiFi-GAN's discriminators (Kong et al. 2020, section 2.2), to train the speech tokenizer's conv
decoder adversarially. They are a training tool: the training command builds them beside the
tokenizer, checkpoints hold them, the saved tokenizer does not.

- Multi-period (MPD): for each period p (2, 3, 5, 7, 11), the waveform, reflect-padded to a
  multiple of p, is folded into a (T / p, p) grid and read by 2-D convolutions of window (5, 1)
  and stride (3, 1): each column holds every p-th sample, so each sub-discriminator judges one
  periodic structure of the signal.
- Multi-scale (MSD, from MelGAN): the raw waveform, and the waveform average-pooled 2x and 4x,
  each read by strided, grouped 1-D convolutions of window 41.

Weight normalisation on every convolution, spectral normalisation on the first (raw) scale.
Widths: `channels` is the first layer's width of every sub-discriminator, the MPD's widening as
c, 4c, 16c, 32c, 32c and the MSD's as c, c, 2c, 4c, 8c, 8c, 8c (groups 1, 4, 16, 16, 16, 16, 1,
fewer where a layer is narrower), all capped at `max_channels`. HiFi-GAN's are larger: c=32 in
the MPD, 128 in the MSD, capped at 1024, about 70M parameters in all. The defaults (16, 128:
1.5M) fit a CPU: at 16 kHz, batch 16 of 8192 samples, one thread, a step costs about 10 times
one without them, nearly all in the discriminators' convolutions.

Losses, summed over the sub-discriminators k as in HiFi-GAN (equations 1-3), with D_k's
intermediate feature maps D_k^i (least-squares GAN, Mao et al. 2017):

    discriminator:     sum_k mean (D_k(x) - 1)^2 + mean D_k(G(z))^2
    generator:         sum_k mean (D_k(G(z)) - 1)^2
    feature matching:  sum_k sum_i mean |D_k^i(x) - D_k^i(G(z))|
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm
from transformers.utils import ModelOutput

LEAKY_SLOPE = 0.1  # HiFi-GAN's
MPD_STRIDES = (3, 3, 3, 3, 1)
MPD_WIDTHS = (1, 4, 16, 32, 32)  # times `channels`
# (width times `channels`, window, stride, groups) of the MSD's convolutions: HiFi-GAN's (MelGAN's)
# with c = 128
MSD_LAYERS = ((1, 15, 1, 1), (1, 41, 2, 4), (2, 41, 2, 16), (4, 41, 4, 16), (8, 41, 4, 16), (8, 41, 1, 16), (8, 5, 1, 1))


@dataclass
class DiscriminatorConfig:
    """The sub-discriminators (one per period, one per scale) and their widths."""

    periods: Sequence[int] = (2, 3, 5, 7, 11)
    num_scales: int = 3
    channels: int = 16
    max_channels: int = 128

    def __post_init__(self):
        self.periods = tuple(self.periods)
        if not self.periods or any(isinstance(p, bool) or not isinstance(p, int) or p < 2 for p in self.periods):
            raise ValueError(f"periods must be integers >= 2, got {list(self.periods)}; HiFi-GAN's are 2, 3, 5, 7, 11.")
        if self.num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {self.num_scales}; HiFi-GAN's 3 are the raw, 2x and 4x pooled waveform.")
        if self.channels < 1 or self.max_channels < self.channels:
            raise ValueError(
                f"channels {self.channels} and max_channels {self.max_channels}: channels must be >= 1 and max_channels >= channels "
                "(HiFi-GAN's: 32 in the periods, 128 in the scales, up to 1024)."
            )


@dataclass
class DiscriminatorOutput(ModelOutput):
    """One entry per sub-discriminator (the periods, then the scales): scores (B, N), the flattened
    last layer's output; features, the feature maps of each of its layers (after the activation,
    the last layer's output included)."""

    scores: list[torch.Tensor] | None = None
    features: list[list[torch.Tensor]] | None = None


def fold_by_period(waveform: torch.Tensor, period: int) -> torch.Tensor:
    """(B, 1, T) -> (B, 1, ceil(T / period), period): row r holds samples r*period ... r*period +
    period - 1; a T that is no multiple of the period is reflect-padded at the end first."""
    batch, channels, length = waveform.shape
    if length % period:
        waveform = F.pad(waveform, (0, period - length % period), mode="reflect")
    return waveform.reshape(batch, channels, -1, period)


def _scores_and_features(convs: nn.ModuleList, post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A sub-discriminator's stack: leaky-ReLU convolutions, then the score map; (scores (B, -1),
    every layer's output, for feature matching)."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LEAKY_SLOPE)
        features.append(x)
    x = post(x)
    features.append(x)
    return x.flatten(1), features


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: int, max_channels: int):
        super().__init__()
        self.period = period
        widths = [min(channels * w, max_channels) for w in MPD_WIDTHS]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(c_in, c_out, (5, 1), (stride, 1), padding=(2, 0)))
            for c_in, c_out, stride in zip([1, *widths], widths, MPD_STRIDES)
        )
        self.post = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return _scores_and_features(self.convs, self.post, fold_by_period(waveform, self.period))


class ScaleDiscriminator(nn.Module):
    def __init__(self, channels: int, max_channels: int, spectral: bool):
        super().__init__()
        norm = spectral_norm if spectral else weight_norm
        layers, c_in = [], 1
        for width, window, stride, groups in MSD_LAYERS:
            c_out = min(channels * width, max_channels)
            # HiFi-GAN's groups, fewer where narrow layers have fewer channels than groups
            layers.append(norm(nn.Conv1d(c_in, c_out, window, stride, padding=window // 2, groups=math.gcd(groups, c_in, c_out))))
            c_in = c_out
        self.convs = nn.ModuleList(layers)
        self.post = norm(nn.Conv1d(c_in, 1, 3, padding=1))

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return _scores_and_features(self.convs, self.post, waveform)


class HiFiGANDiscriminator(nn.Module):
    """The multi-period and multi-scale discriminators together: waveforms (B, 1, T) -> one score
    map and the feature maps per sub-discriminator."""

    def __init__(self, config: DiscriminatorConfig | None = None):
        super().__init__()
        self.config = config = config or DiscriminatorConfig()
        c, top = config.channels, config.max_channels
        self.periods = nn.ModuleList(PeriodDiscriminator(p, c, top) for p in config.periods)
        self.scales = nn.ModuleList(ScaleDiscriminator(c, top, spectral=i == 0) for i in range(config.num_scales))
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, waveform: torch.Tensor) -> DiscriminatorOutput:
        if waveform.ndim != 3 or waveform.shape[1] != 1:
            raise ValueError(f"expected mono waveforms shaped (B, 1, T), got {tuple(waveform.shape)}.")
        scores, features = [], []
        for discriminator in self.periods:
            score, maps = discriminator(waveform)
            scores.append(score)
            features.append(maps)
        for i, discriminator in enumerate(self.scales):
            if i:
                waveform = self.pool(waveform)
            score, maps = discriminator(waveform)
            scores.append(score)
            features.append(maps)
        return DiscriminatorOutput(scores=scores, features=features)


# -- losses ------------------------------------------------------------------------------------------
def discriminator_loss(real_scores: list[torch.Tensor], generated_scores: list[torch.Tensor]) -> torch.Tensor:
    """Least squares: real pushed to 1, generated to 0, summed over the sub-discriminators."""
    return sum(((1 - real) ** 2).mean() + (generated**2).mean() for real, generated in zip(real_scores, generated_scores))


def generator_loss(generated_scores: list[torch.Tensor]) -> torch.Tensor:
    """Least squares: the generated waveforms' scores pushed to 1, summed over the sub-discriminators."""
    return sum(((1 - generated) ** 2).mean() for generated in generated_scores)


def feature_matching_loss(real_features: list[list[torch.Tensor]], generated_features: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between the feature maps of real and generated waveforms (the real ones as fixed targets),
    averaged per layer, summed over layers and sub-discriminators."""
    return sum(
        (real.detach() - generated).abs().mean()
        for real_maps, generated_maps in zip(real_features, generated_features)
        for real, generated in zip(real_maps, generated_maps)
    )


def _judge(discriminator: nn.Module, real: torch.Tensor, generated: torch.Tensor) -> tuple[DiscriminatorOutput, DiscriminatorOutput]:
    """The discriminator's outputs on real and generated waveforms, in one call (one DDP forward)."""
    output = discriminator(torch.cat([real, generated]))
    n = real.shape[0]
    real_output, generated_output = (
        DiscriminatorOutput(scores=[s[part] for s in output.scores], features=[[m[part] for m in maps] for maps in output.features])
        for part in (slice(None, n), slice(n, None))
    )
    return real_output, generated_output


def discriminator_step_loss(discriminator: nn.Module, real: torch.Tensor, generated: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The discriminator's loss on a batch of real and (detached) generated waveforms, with its
    mean scores on each."""
    real_output, generated_output = _judge(discriminator, real, generated)
    loss = discriminator_loss(real_output.scores, generated_output.scores)
    metrics = {
        "discriminator_loss": loss.detach(),
        "discriminator_score_real": torch.stack([s.detach().mean() for s in real_output.scores]).mean(),
        "discriminator_score_generated": torch.stack([s.detach().mean() for s in generated_output.scores]).mean(),
    }
    return loss, metrics


def generator_step_loss(
    discriminator: nn.Module, real: torch.Tensor, generated: torch.Tensor, feature_matching_weight: float = 2.0
) -> tuple[torch.Tensor, dict]:
    """What the generator adds to its loss: the adversarial loss plus `feature_matching_weight`
    (HiFi-GAN: 2) times the feature-matching loss."""
    real_output, generated_output = _judge(discriminator, real, generated)
    adversarial = generator_loss(generated_output.scores)
    matching = feature_matching_loss(real_output.features, generated_output.features)
    return adversarial + feature_matching_weight * matching, {
        "adversarial_loss": adversarial.detach(),
        "feature_matching_loss": matching.detach(),
    }


__all__ = [
    "DiscriminatorConfig",
    "DiscriminatorOutput",
    "HiFiGANDiscriminator",
    "discriminator_loss",
    "discriminator_step_loss",
    "feature_matching_loss",
    "fold_by_period",
    "generator_loss",
    "generator_step_loss",
]
