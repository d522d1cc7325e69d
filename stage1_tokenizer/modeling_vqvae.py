"""The image VQ-VAE tokenizer: conv encoder -> quantizer -> conv decoder (one level for now)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_vqvae import VQVAEConfig
from .networks import ConvDecoder, ConvEncoder
from .quantizers import build_quantizer


@dataclass
class VQVAEOutput(ModelOutput):
    """reconstruction: like the input. loss = reconstruction_loss + quantizer_loss.
    codes: one LongTensor per level, top level first. perplexity: one scalar per level."""

    reconstruction: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    codes: list[torch.Tensor] | None = None
    reconstruction_loss: torch.Tensor | None = None
    quantizer_loss: torch.Tensor | None = None
    perplexity: list[torch.Tensor] | None = None


class VQVAEModel(PreTrainedModel):
    config_class = VQVAEConfig
    base_model_prefix = "vqvae"
    main_input_name = "pixel_values"

    def __init__(self, config: VQVAEConfig):
        super().__init__(config)
        self.encoder = ConvEncoder(
            config.in_channels, config.hidden_channels, config.code_dim, config.num_downsamples, config.num_res_blocks
        )
        self.quantizer = build_quantizer(
            config.quantizer, config.codebook_size, config.code_dim, **config.quantizer_options
        )
        self.decoder = ConvDecoder(
            config.in_channels, config.hidden_channels, config.code_dim, config.num_downsamples, config.num_res_blocks
        )
        self.post_init()

    def _init_weights(self, module):
        # Keep PyTorch's default (Kaiming-uniform) conv init; transformers' N(0, 0.02) starves ReLU nets.
        pass

    # -- bits -----------------------------------------------------------------------------------
    @property
    def code_bits(self) -> float:
        h, w = self.config.code_grid
        return h * w * math.log2(self.config.codebook_size)

    @property
    def compression_ratio(self) -> float:
        """Input bits (8 per subpixel) over code bits, as in the paper's 42.7x for ImageNet."""
        input_bits = self.config.in_channels * self.config.image_size**2 * 8
        return input_bits / self.code_bits

    # -- forward ----------------------------------------------------------------------------------
    def _check_images(self, pixel_values: torch.Tensor) -> None:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected images shaped (B, {self.config.in_channels}, H, W), got {tuple(pixel_values.shape)}."
            )
        stride = 2**self.config.num_downsamples
        if pixel_values.shape[2] % stride or pixel_values.shape[3] % stride:
            raise ValueError(
                f"image size {tuple(pixel_values.shape[2:])} is not divisible by the total stride {stride}; "
                f"resize or crop the images to a multiple of {stride}."
            )

    def forward(self, pixel_values: torch.Tensor) -> VQVAEOutput:
        self._check_images(pixel_values)
        latents = self.encoder(pixel_values).permute(0, 2, 3, 1)  # (B, h, w, D)
        quantized = self.quantizer(latents)
        reconstruction = self.decoder(quantized.quantized.permute(0, 3, 1, 2))
        reconstruction_loss = F.mse_loss(reconstruction, pixel_values)
        return VQVAEOutput(
            reconstruction=reconstruction,
            loss=reconstruction_loss + quantized.loss,
            codes=[quantized.codes],
            reconstruction_loss=reconstruction_loss,
            quantizer_loss=quantized.loss,
            perplexity=[quantized.perplexity],
        )

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        return self(pixel_values).codes

    def decode(self, codes: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Images from codes (a list with one (B, h, w) LongTensor per level, or that tensor)."""
        if torch.is_tensor(codes):
            codes = [codes]
        if len(codes) != 1:
            raise ValueError(f"this tokenizer has 1 level, got codes for {len(codes)} levels.")
        grid = codes[0]
        if grid.dtype != torch.long or grid.ndim != 3:
            raise ValueError(f"codes must be LongTensor (B, h, w), got {grid.dtype} {tuple(grid.shape)}.")
        if grid.numel() and (grid.min() < 0 or grid.max() >= self.config.codebook_size):
            raise ValueError(
                f"code ids must lie in [0, {self.config.codebook_size - 1}], got [{grid.min().item()}, "
                f"{grid.max().item()}]: were these codes made by another tokenizer?"
            )
        vectors = self.quantizer.codebook[grid]  # (B, h, w, D)
        return self.decoder(vectors.permute(0, 3, 1, 2))
