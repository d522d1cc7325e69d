"""The image VQ-VAE tokenizer: one level (van den Oord et al. 2017) or a two-level hierarchy
(VQ-VAE-2, Razavi et al. 2019, section 3.1 and figure 2a):

    one level:  x -> encoder -> quantizer -> decoder -> x'
    two levels: x -> encoder (stride 4) = h -> top_encoder (stride 2 more) -> top_quantizer = q_top
                top_decoder(q_top) (back at stride 4) ++ h -> pre_quantize -> quantizer = q_bottom
                decoder(upsample_top(q_top) ++ q_bottom) -> x'

The top level's decoded features condition the bottom level's encoding; the decoder takes both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
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
        c = config
        hierarchical = c.num_levels == 2
        # The bottom encoder outputs features (hierarchical) or the codes' vectors (one level).
        self.encoder = ConvEncoder(
            c.in_channels, c.hidden_channels, c.hidden_channels if hierarchical else c.code_dim,
            c.num_downsamples, c.num_res_blocks,
        )  # fmt: skip
        self.quantizer = build_quantizer(c.quantizer, c.codebook_size, c.code_dim, **c.quantizer_options)
        if hierarchical:
            self.top_encoder = ConvEncoder(c.hidden_channels, c.hidden_channels, c.code_dim, 1, c.num_res_blocks)
            self.top_quantizer = build_quantizer(c.quantizer, c.codebook_size, c.code_dim, **c.quantizer_options)
            self.top_decoder = ConvDecoder(c.code_dim, c.hidden_channels, c.code_dim, 1, c.num_res_blocks)
            self.pre_quantize = nn.Conv2d(c.hidden_channels + c.code_dim, c.code_dim, 1)
            self.upsample_top = nn.ConvTranspose2d(c.code_dim, c.code_dim, 4, stride=2, padding=1)
        decoder_input = c.code_dim * c.num_levels
        self.decoder = ConvDecoder(c.in_channels, c.hidden_channels, decoder_input, c.num_downsamples, c.num_res_blocks)
        self.post_init()

    @property
    def quantizers(self) -> list[nn.Module]:
        """One quantizer per level, top level first."""
        return [self.top_quantizer, self.quantizer] if self.config.num_levels == 2 else [self.quantizer]

    def _init_weights(self, module):
        # Keep PyTorch's default (Kaiming-uniform) conv init; transformers' N(0, 0.02) starves ReLU nets.
        pass

    # -- bits -----------------------------------------------------------------------------------
    @property
    def code_bits(self) -> float:
        """Bits of one image's codes, all levels."""
        return sum(h * w for h, w in self.config.code_grids) * math.log2(self.config.codebook_size)

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
        stride = self.config.total_stride
        if pixel_values.shape[2] % stride or pixel_values.shape[3] % stride:
            raise ValueError(
                f"image size {tuple(pixel_values.shape[2:])} is not divisible by the total stride {stride}; "
                f"resize or crop the images to a multiple of {stride}."
            )

    def forward(self, pixel_values: torch.Tensor) -> VQVAEOutput:
        self._check_images(pixel_values)
        features = self.encoder(pixel_values)  # (B, C, h, w)
        outputs = []
        if self.config.num_levels == 2:
            top = self.top_quantizer(self.top_encoder(features).permute(0, 2, 3, 1))  # codes (B, h/2, w/2)
            top_quantized = top.quantized.permute(0, 3, 1, 2)
            conditioned = torch.cat([self.top_decoder(top_quantized), features], dim=1)
            features = self.pre_quantize(conditioned)
            outputs.append(top)
        bottom = self.quantizer(features.permute(0, 2, 3, 1))  # codes (B, h, w)
        outputs.append(bottom)
        reconstruction = self.decoder(self._decoder_input([o.quantized for o in outputs]))
        reconstruction_loss = F.mse_loss(reconstruction, pixel_values)
        quantizer_loss = sum(o.loss for o in outputs)
        return VQVAEOutput(
            reconstruction=reconstruction,
            loss=reconstruction_loss + quantizer_loss,
            codes=[o.codes for o in outputs],
            reconstruction_loss=reconstruction_loss,
            quantizer_loss=quantizer_loss,
            perplexity=[o.perplexity for o in outputs],
        )

    def _decoder_input(self, vectors: list[torch.Tensor]) -> torch.Tensor:
        """Channel-last quantized vectors per level (top first) -> the decoder's input."""
        maps = [v.permute(0, 3, 1, 2) for v in vectors]
        if len(maps) == 2:
            maps[0] = self.upsample_top(maps[0])
        return torch.cat(maps, dim=1)

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """Codes per level, top first: LongTensors (B, h, w)."""
        return self(pixel_values).codes

    def decode(self, codes: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Images from codes: a list with one (B, h, w) LongTensor per level, top first (or, for
        one level, that tensor). Refuses ids outside the codebook and grids of the wrong shape."""
        if torch.is_tensor(codes):
            codes = [codes]
        levels = self.config.num_levels
        if len(codes) != levels:
            raise ValueError(f"this tokenizer has {levels} level(s), got codes for {len(codes)} levels.")
        bottom = codes[-1]
        if bottom.ndim != 3:
            raise ValueError(f"codes must be LongTensors (B, h, w), got shape {tuple(bottom.shape)}.")
        h, w = bottom.shape[1:]
        expected = [(h // 2, w // 2), (h, w)][-levels:]
        for level, (grid, shape) in enumerate(zip(codes, expected)):
            if grid.dtype != torch.long or tuple(grid.shape) != (bottom.shape[0], *shape):
                raise ValueError(
                    f"codes of level {level} (top first) must be a LongTensor {(bottom.shape[0], *shape)}, "
                    f"got {grid.dtype} {tuple(grid.shape)}; levels: {self.config.code_grids} for "
                    f"{self.config.image_size}x{self.config.image_size} images."
                )
            if grid.numel() and (grid.min() < 0 or grid.max() >= self.config.codebook_size):
                raise ValueError(
                    f"code ids must lie in [0, {self.config.codebook_size - 1}], got [{grid.min().item()}, "
                    f"{grid.max().item()}] at level {level}: were these codes made by another tokenizer?"
                )
        vectors = [quantizer.codebook[grid] for quantizer, grid in zip(self.quantizers, codes)]  # (B, h, w, D)
        return self.decoder(self._decoder_input(vectors))
