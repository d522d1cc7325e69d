"""The dilated causal convolution stack of WaveNet (van den Oord et al. 2016, section 2), with the
fast generation queues of Paine et al. 2016 ("Fast Wavenet Generation Algorithm").

Written once here and used by both stages: stage two's `WaveNetPrior` over code sequences and the
speech tokenizer's `WaveNetDecoder` over mu-law audio samples (`stage1_tokenizer.wavenet_decoder`).

Each layer (equation 2 of the paper, with its conditioning from section 2.5):

    a, b = split(causal_conv_d(x) + V_g g + V_l l)     # dilation d, kernel k: taps t - (k-1)d ... t
    gated = tanh(a) * sigmoid(b)
    x <- x + W_res gated                                # residual path
    skip += W_skip gated                                # skip path, summed over layers

`g` is a global conditioning vector (speaker or class embedding), `l` a local conditioning
sequence (upsampled codes of an upper level, or the codes of the audio decoder). `l` may come at a
rate `local_upsample` times lower than `x`: it is projected at its own rate and each of its steps
then covers `local_upsample` steps of `x` (64 audio samples per code), which keeps the cache small.
The stack's output is the sum of the skips.

Generation one step at a time (`step`): each layer keeps a queue of its last (k-1)*d inputs, so a
step costs one k-tap product per layer instead of a convolution over the whole past. A zero queue
is exactly the zero padding of the full convolution, so both paths compute the same function.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def gated_activation(pre_activation: torch.Tensor) -> torch.Tensor:
    """tanh(a) * sigmoid(b) for a, b the two halves of the channel axis (dim 1): WaveNet's
    equation 2 and the gated PixelCNN's equation 4."""
    filter_, gate = pre_activation.chunk(2, dim=1)
    return torch.tanh(filter_) * torch.sigmoid(gate)


class GatedResidualLayer(nn.Module):
    def __init__(self, channels: int, skip_channels: int, kernel_size: int, dilation: int, global_channels: int, local_channels: int):
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.conv = nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation)
        self.global_projection = nn.Linear(global_channels, 2 * channels, bias=False) if global_channels else None
        self.local_projection = nn.Conv1d(local_channels, 2 * channels, 1, bias=False) if local_channels else None
        # one 1x1 convolution gives both the residual and the skip output
        self.output = nn.Conv1d(channels, channels + skip_channels, 1)
        self.channels = channels

    @property
    def receptive_field(self) -> int:
        return (self.kernel_size - 1) * self.dilation

    def conditioning(self, global_cond, local_cond, local_upsample: int = 1, length: int | None = None):
        """The (B, 2C, 1) + (B, 2C, T') terms added before the gate (0 when absent). Without
        `length`, the local term stays at its own rate (T' = local steps); with it, each local step
        is repeated `local_upsample` times and the result cut to `length`."""
        bias = 0
        if self.global_projection is not None:
            bias = bias + self.global_projection(global_cond).unsqueeze(-1)
        if self.local_projection is not None:
            local = self.local_projection(local_cond)
            if length is not None:
                local = local.repeat_interleave(local_upsample, dim=-1)[..., :length]
            bias = bias + local
        return bias

    def forward(self, x, global_cond=None, local_cond=None, local_upsample: int = 1):  # x (B, C, T)
        # Taps reaching back T or more steps only ever see the zero padding: drop them, so a
        # short sequence does not pay for dilations longer than itself (same values).
        taps = 1 + min(self.kernel_size - 1, (x.shape[-1] - 1) // self.dilation)
        weight = self.conv.weight[:, :, self.kernel_size - taps :]
        pre = F.conv1d(F.pad(x, ((taps - 1) * self.dilation, 0)), weight, self.conv.bias, dilation=self.dilation)
        pre = pre + self.conditioning(global_cond, local_cond, local_upsample, x.shape[-1])
        residual, skip = self.output(gated_activation(pre)).split([self.channels, self.output.out_channels - self.channels], 1)
        return x + residual, skip


@dataclass
class StackCache:
    """Per-layer queues of past inputs, and each layer's weights laid out for one-vector steps."""

    queues: list[torch.Tensor]  # layer i: ((k-1) * d_i, B, C), a ring buffer indexed by t mod its length
    biases: list[torch.Tensor]  # layer i: (local steps or 1, B, 2C): conv bias + conditioning
    tap_weights: list[torch.Tensor]  # layer i: (k*C, 2C), the dilated kernel as one matmul, oldest tap first
    output_weights: list[torch.Tensor]  # layer i: (C, C + S), the 1x1 residual-and-skip output
    step: int = 0


class DilatedCausalStack(nn.Module):
    """`num_layers` gated residual layers with dilations 1, 2, 4, ... 2**(cycle-1), repeated.

    forward(x (B, C, T), global_cond (B, G) | None, local_cond (B, L, T / local_upsample) | None)
        -> skips (B, S, T)
    """

    def __init__(
        self,
        channels: int,
        skip_channels: int,
        num_layers: int,
        dilation_cycle: int = 10,
        kernel_size: int = 2,
        global_channels: int = 0,
        local_channels: int = 0,
        local_upsample: int = 1,
    ):
        super().__init__()
        if kernel_size < 2:
            raise ValueError(f"kernel_size must be at least 2, got {kernel_size}.")
        if local_upsample < 1:
            raise ValueError(f"local_upsample must be a positive int, got {local_upsample}.")
        self.local_upsample = local_upsample
        self.layers = nn.ModuleList(
            GatedResidualLayer(channels, skip_channels, kernel_size, 2 ** (i % dilation_cycle), global_channels, local_channels)
            for i in range(num_layers)
        )

    @property
    def receptive_field(self) -> int:
        """Time steps each output sees, itself included."""
        return 1 + sum(layer.receptive_field for layer in self.layers)

    def forward(self, x, global_cond=None, local_cond=None):
        skips = 0
        for layer in self.layers:
            x, skip = layer(x, global_cond, local_cond, self.local_upsample)
            skips = skips + skip
        return skips

    # -- fast generation (Paine et al. 2016) ------------------------------------------------------
    def init_cache(self, batch_size: int, global_cond=None, local_cond=None) -> StackCache:
        reference = self.layers[0].conv.weight
        cache = StackCache([], [], [], [])
        for layer in self.layers:
            cache.queues.append(reference.new_zeros(layer.receptive_field, batch_size, layer.channels))
            bias = layer.conv.bias[None, :, None] + layer.conditioning(global_cond, local_cond)  # (1|B, 2C, 1|T)
            cache.biases.append(bias.expand(batch_size, -1, -1).permute(2, 0, 1).contiguous())  # (T|1, B, 2C)
            weight = layer.conv.weight  # (2C, C, k)
            cache.tap_weights.append(weight.permute(2, 1, 0).reshape(-1, weight.shape[0]).contiguous())
            cache.output_weights.append(layer.output.weight[:, :, 0].T.contiguous())
        return cache

    def step(self, x, cache: StackCache):
        """x (B, C): the input at time t = cache.step -> the summed skips (B, S) at time t.
        Written for few kernel launches per layer: sampling speed is bound by them, not by FLOPs."""
        t = cache.step
        local_step = t // self.local_upsample
        skips = 0
        for layer, queue, bias, taps_weight, output_weight in zip(
            self.layers, cache.queues, cache.biases, cache.tap_weights, cache.output_weights
        ):
            size, d, k = queue.shape[0], layer.dilation, layer.kernel_size
            taps = [queue[(t - (k - 1 - m) * d) % size] for m in range(k - 1)]  # inputs at t-(k-1)d .. t-d
            pre = torch.addmm(bias[local_step if bias.shape[0] > 1 else 0], torch.cat([*taps, x], dim=1), taps_weight)  # (B, 2C)
            queue[t % size] = x  # x is now the newest past input of this layer
            out = torch.addmm(layer.output.bias, gated_activation(pre), output_weight)  # (B, C + S)
            x = x + out[:, : layer.channels]
            skips = skips + out[:, layer.channels :]
        cache.step += 1
        return skips
