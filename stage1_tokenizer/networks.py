"""Convolutional encoder and decoder of the image VQ-VAE (van den Oord et al. 2017, section 4.1).

Encoder: `num_downsamples` stride-2 4x4 convolutions, a 3x3 convolution, residual blocks
(ReLU, 3x3 conv, ReLU, 1x1 conv), then a 1x1 projection to `code_dim`. The decoder mirrors it with
transposed convolutions. Feature maps are channel-first; the quantizers take channel-last.
"""

from __future__ import annotations

from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, hidden_channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, hidden_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, channels, 1),
        )

    def forward(self, x):
        return x + self.block(x)


class ConvEncoder(nn.Module):
    def __init__(
        self, in_channels: int, hidden_channels: int, code_dim: int, num_downsamples: int = 2, num_res_blocks: int = 2
    ):
        super().__init__()
        layers, channels = [], in_channels
        for i in range(num_downsamples):
            out = hidden_channels // 2 if i < num_downsamples - 1 else hidden_channels
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), nn.ReLU()]
            channels = out
        layers.append(nn.Conv2d(channels, hidden_channels, 3, padding=1))
        layers += [ResidualBlock(hidden_channels, hidden_channels // 2) for _ in range(num_res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(hidden_channels, code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # (B, C, H, W) -> (B, code_dim, H / 2^n, W / 2^n)
        return self.net(x)


class ConvDecoder(nn.Module):
    def __init__(
        self, out_channels: int, hidden_channels: int, code_dim: int, num_upsamples: int = 2, num_res_blocks: int = 2
    ):
        super().__init__()
        layers = [nn.Conv2d(code_dim, hidden_channels, 3, padding=1)]
        layers += [ResidualBlock(hidden_channels, hidden_channels // 2) for _ in range(num_res_blocks)]
        layers.append(nn.ReLU())
        channels = hidden_channels
        for i in range(num_upsamples):
            last = i == num_upsamples - 1
            out = out_channels if last else hidden_channels // 2
            layers.append(nn.ConvTranspose2d(channels, out, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
            channels = out
        self.net = nn.Sequential(*layers)

    def forward(self, z):  # (B, code_dim, h, w) -> (B, out_channels, h * 2^n, w * 2^n)
        return self.net(z)
