"""Convolutional encoder and decoder of the VQ-VAE (van den Oord et al. 2017, sections 4.1 and 4.3).

Encoder: `num_downsamples` stride-2 convolutions of window 4, a convolution of window 3, residual
blocks (ReLU, window-3 conv, ReLU, 1x1 conv), then a 1x1 projection to `code_dim`. The decoder
mirrors it with transposed convolutions. `dims=2` for images (4x4 windows), `dims=1` for raw
audio (the paper's speech encoder: six stride-2 convolutions of window 4, 64x fewer codes than
samples). A waveform decoder needs more than six bare transposed convolutions to shape its
output: `stage_res_blocks` adds residual blocks after each upsampling step but the last (the
speech tokenizer uses one). With `condition_channels`, every residual block of the decoder adds
a learned projection of a condition vector (a speaker embedding) after its first convolution.
Feature maps are channel-first; the quantizers take channel-last.
"""

from __future__ import annotations

from torch import nn


def conv_classes(dims: int) -> tuple[type[nn.Module], type[nn.Module]]:
    """(convolution, transposed convolution) for 1-D (audio) or 2-D (images) feature maps."""
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 (audio) or 2 (images), got {dims}.")
    return (nn.Conv1d, nn.ConvTranspose1d) if dims == 1 else (nn.Conv2d, nn.ConvTranspose2d)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, hidden_channels: int, dims: int = 2, condition_channels: int = 0):
        super().__init__()
        conv, _ = conv_classes(dims)
        self.block = nn.Sequential(
            nn.ReLU(),
            conv(channels, hidden_channels, 3, padding=1),
            nn.ReLU(),
            conv(hidden_channels, channels, 1),
        )
        self.condition = nn.Linear(condition_channels, hidden_channels) if condition_channels else None

    def forward(self, x, condition=None):
        if self.condition is None:
            return x + self.block(x)
        hidden = self.block[1](self.block[0](x))
        hidden = hidden + self.condition(condition).view(*hidden.shape[:2], *([1] * (hidden.ndim - 2)))
        return x + self.block[3](self.block[2](hidden))


class ConvEncoder(nn.Module):
    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        code_dim: int,
        num_downsamples: int = 2,
        num_res_blocks: int = 2,
        dims: int = 2,
    ):
        super().__init__()
        conv, _ = conv_classes(dims)
        layers, channels = [], in_channels
        for i in range(num_downsamples):
            out = hidden_channels // 2 if i < num_downsamples - 1 else hidden_channels
            layers += [conv(channels, out, 4, stride=2, padding=1), nn.ReLU()]
            channels = out
        layers.append(conv(channels, hidden_channels, 3, padding=1))
        layers += [ResidualBlock(hidden_channels, hidden_channels // 2, dims) for _ in range(num_res_blocks)]
        layers += [nn.ReLU(), conv(hidden_channels, code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # (B, C, H, W) -> (B, code_dim, H / 2^n, W / 2^n); 1-D: (B, C, T) -> (B, code_dim, T / 2^n)
        return self.net(x)


class ConvDecoder(nn.Module):
    def __init__(
        self,
        out_channels: int,
        hidden_channels: int,
        code_dim: int,
        num_upsamples: int = 2,
        num_res_blocks: int = 2,
        dims: int = 2,
        stage_res_blocks: int = 0,
        condition_channels: int = 0,
    ):
        super().__init__()
        conv, transposed = conv_classes(dims)
        layers = [conv(code_dim, hidden_channels, 3, padding=1)]
        layers += [ResidualBlock(hidden_channels, hidden_channels // 2, dims, condition_channels) for _ in range(num_res_blocks)]
        layers.append(nn.ReLU())
        channels = hidden_channels
        for i in range(num_upsamples):
            last = i == num_upsamples - 1
            out = out_channels if last else hidden_channels // 2
            layers.append(transposed(channels, out, 4, stride=2, padding=1))
            if not last:
                layers += [ResidualBlock(out, out, dims, condition_channels) for _ in range(stage_res_blocks)]
                layers.append(nn.ReLU())
            channels = out
        self.net = nn.Sequential(*layers)

    def forward(self, z, condition=None):  # (B, code_dim, h, w) -> (B, out_channels, h * 2^n, w * 2^n)
        if condition is None:
            return self.net(z)
        for layer in self.net:  # condition: (B, condition_channels), for the residual blocks
            z = layer(z, condition) if isinstance(layer, ResidualBlock) else layer(z)
        return z
