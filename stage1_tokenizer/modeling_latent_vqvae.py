"""A VQ-VAE over the codes of another VQ-VAE: the VQ-VAE paper's DeepMind Lab experiment (section
4.2), where 84x84x3 frames -> 21x21 codes (K=512) are compressed again, by a second VQ-VAE trained
on those codes, into a 3x1 grid of codes (K=512 each: 27 bits per frame) that still captures the
scene's global structure.

    codes (B, 21, 21) of the frame tokenizer
      -> embed, stride-2 convolutions, residual blocks, a linear map -> (B, 3, 1, D) -> quantizer
      -> decoder -> logits (B, 21, 21, K_in) over the first-stage codes (cross-entropy)

Decoders (`decoder=`):
- "conv": a linear map of the three code vectors to a small feature map, upsampled to the grid,
  residual blocks, a 1x1 projection to the logits; decoding takes each position's most likely code.
- "pixelcnn" (the paper's): a gated PixelCNN over the 21x21 codes, conditioned at every position on
  features of the three code vectors (`stage1_tokenizer.pixelcnn`); decoding samples it.

`frames_round_trip(frame_tokenizer, latent_model, frames)` runs frames -> 21x21 -> 3 codes -> 21x21
-> frames in one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .code_dataset import tokenizer_fingerprint
from .common.checks import check_ids_in_range
from .common.loading import StrictLoading
from .configuration_latent_vqvae import LatentVQVAEConfig
from .networks import ResidualBlock
from .quantizers import build_quantizer

@dataclass
class LatentVQVAEOutput(ModelOutput):
    """logits: (B, h, w, input_codebook_size) over the input codes. loss = reconstruction_loss
    (cross-entropy in nats per input code) + quantizer_loss. codes: [(B, *code_grid)].
    reconstruction: the most likely input codes (B, h, w) (teacher-forced for the PixelCNN)."""

    logits: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    codes: list[torch.Tensor] | None = None
    reconstruction: torch.Tensor | None = None
    reconstruction_loss: torch.Tensor | None = None
    quantizer_loss: torch.Tensor | None = None
    perplexity: list[torch.Tensor] | None = None


class LatentVQVAEModel(StrictLoading, PreTrainedModel):
    config_class = LatentVQVAEConfig
    base_model_prefix = "latent_vqvae"
    main_input_name = "codes"

    def __init__(self, config: LatentVQVAEConfig):
        super().__init__(config)
        c = config
        hidden, (rh, rw) = c.hidden_channels, c.reduced_grid
        self.code_embedding = nn.Embedding(c.input_codebook_size, hidden)
        layers = []
        for _ in range(c.num_downsamples):
            layers += [nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.ReLU()]
        layers += [ResidualBlock(hidden, hidden // 2) for _ in range(c.num_res_blocks)]
        self.encoder = nn.Sequential(*layers, nn.ReLU())
        # The few codes summarise the whole grid: a linear map sees every position.
        self.to_codes = nn.Linear(hidden * rh * rw, math.prod(c.code_grid) * c.code_dim)
        self.quantizer = build_quantizer(c.quantizer, c.codebook_size, c.code_dim, **c.quantizer_options)
        # code vectors -> a (hidden, rh, rw) map, upsampled to the input grid: the decoder's features
        self.from_codes = nn.Linear(math.prod(c.code_grid) * c.code_dim, hidden * rh * rw)
        if c.decoder == "conv":
            self.decoder = nn.Sequential(
                *[ResidualBlock(hidden, hidden // 2) for _ in range(c.num_res_blocks)], nn.ReLU(), nn.Conv2d(hidden, c.input_codebook_size, 1)
            )
        else:
            from .common.pixelcnn import GatedPixelCNN

            self.decoder = GatedPixelCNN(
                c.input_codebook_size, c.input_codebook_size, c.pixelcnn_channels, c.pixelcnn_layers, context_channels=hidden
            )
        self.post_init()

    def _init_weights(self, module):
        pass  # PyTorch's default initialisation, as the image VQ-VAE

    @property
    def quantizers(self) -> list[nn.Module]:
        return [self.quantizer]

    @property
    def bits_per_frame(self) -> float:
        """Bits of one frame's codes: 3 codes of K=512 make the paper's 27 bits."""
        return math.prod(self.config.code_grid) * math.log2(self.config.codebook_size)

    # -- parts ---------------------------------------------------------------------------------------
    def check_codes(self, codes: torch.Tensor) -> None:
        c = self.config
        if not torch.is_tensor(codes) or codes.dtype != torch.long or tuple(codes.shape[1:]) != tuple(c.input_grid):
            got = f"{codes.dtype} {tuple(codes.shape)}" if torch.is_tensor(codes) else type(codes).__name__
            raise ValueError(f"expected input codes as a LongTensor (B, {c.input_grid[0]}, {c.input_grid[1]}), got {got}.")
        check_ids_in_range(
            codes, c.input_codebook_size, "input code ids",
            ending=": were these codes made by a tokenizer with another codebook size?",
        )  # fmt: skip

    def _quantize(self, codes: torch.Tensor):
        features = self.encoder(self.code_embedding(codes).permute(0, 3, 1, 2))  # (B, hidden, rh, rw)
        vectors = self.to_codes(features.flatten(1)).view(codes.shape[0], *self.config.code_grid, self.config.code_dim)
        return self.quantizer(vectors)  # codes (B, *code_grid)

    def _features(self, quantized: torch.Tensor) -> torch.Tensor:
        """Code vectors (B, *code_grid, D) -> decoder features (B, hidden, *input_grid)."""
        rh, rw = self.config.reduced_grid
        small = self.from_codes(quantized.flatten(1)).view(quantized.shape[0], -1, rh, rw)
        return F.interpolate(small, size=tuple(self.config.input_grid), mode="bilinear", align_corners=False)

    # -- forward ---------------------------------------------------------------------------------------
    def forward(self, codes: torch.Tensor) -> LatentVQVAEOutput:
        """codes: the frame tokenizer's codes (B, 21, 21) -> logits over them, given 3 codes."""
        self.check_codes(codes)
        quantized = self._quantize(codes)
        features = self._features(quantized.quantized)
        if self.config.decoder == "conv":
            logits = self.decoder(features).permute(0, 2, 3, 1).contiguous()  # (B, h, w, K_in)
        else:
            logits = self.decoder(codes, context=features)
        reconstruction_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), codes.reshape(-1))
        return LatentVQVAEOutput(
            logits=logits,
            loss=reconstruction_loss + quantized.loss,
            codes=[quantized.codes],
            reconstruction=logits.detach().max(-1).indices,  # the argmax; max() is about 2x faster on a CPU
            reconstruction_loss=reconstruction_loss,
            quantizer_loss=quantized.loss,
            perplexity=[quantized.perplexity],
        )

    @torch.no_grad()
    def encode(self, codes: torch.Tensor) -> list[torch.Tensor]:
        """Input codes (B, 21, 21) -> [this model's codes (B, 3, 1)]."""
        self.check_codes(codes)
        return [self._quantize(codes).codes]

    @torch.no_grad()
    def decode(
        self, codes, *, temperature: float = 1.0, generator: torch.Generator | None = None, use_cache: bool = True
    ) -> torch.Tensor:
        """This model's codes [(B, 3, 1)] (or the tensor) -> input codes (B, 21, 21): the most
        likely ones (conv decoder) or a sample (PixelCNN decoder: temperature, generator)."""
        codes = codes[0] if isinstance(codes, (list, tuple)) else codes
        c = self.config
        if codes.dtype != torch.long or tuple(codes.shape[1:]) != tuple(c.code_grid):
            raise ValueError(f"codes must be a LongTensor (B, {c.code_grid[0]}, {c.code_grid[1]}), got {codes.dtype} {tuple(codes.shape)}.")
        check_ids_in_range(codes, c.codebook_size, "code ids")
        features = self._features(self.quantizer.codebook[codes])
        if c.decoder == "conv":
            return self.decoder(features).argmax(1)
        return self.decoder.generate(features, temperature=temperature, generator=generator, use_cache=use_cache)


@torch.no_grad()
def frames_round_trip(frame_tokenizer, latent_model: LatentVQVAEModel, frames: torch.Tensor, **decode_options) -> dict:
    """frames -> 21x21 codes -> 3 codes -> 21x21 codes -> frames, in one call. Returns the
    frames decoded from the 21x21 codes ("from_grid") and from the 3 codes ("from_codes"), and
    the codes of both stages ("grid_codes", "codes"). Refuses a latent model trained on another
    tokenizer's codes."""
    expected = latent_model.config.input_fingerprint
    if expected and expected != tokenizer_fingerprint(frame_tokenizer):
        raise ValueError(
            f"the latent model was trained on the codes of tokenizer {expected[:12]}, not of this frame tokenizer: "
            "pair it with the tokenizer whose codes it was trained on."
        )
    grid_codes = frame_tokenizer.encode(frames)[-1]
    codes = latent_model.encode(grid_codes)[0]
    regrid = latent_model.decode(codes, **decode_options)
    return {
        "grid_codes": grid_codes,
        "codes": codes,
        "from_grid": frame_tokenizer.decode(grid_codes),
        "from_codes": frame_tokenizer.decode(regrid),
    }
