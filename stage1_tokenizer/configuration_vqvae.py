"""Configuration of the image VQ-VAE tokenizer: one level (VQ-VAE) or two (VQ-VAE-2)."""

from __future__ import annotations

from transformers import PretrainedConfig


class VQVAEConfig(PretrainedConfig):
    r"""
    Args:
        in_channels (`int`, 1): image channels (1 for Fashion-MNIST, 3 for RGB).
        image_size (`int`, 28): side of the (square) training images; used for the bit counts.
        hidden_channels (`int`, 64): width of the encoder and decoder.
        num_res_blocks (`int`, 2): residual blocks in the encoder and in the decoder.
        num_downsamples (`int`, 2): stride-2 convolutions of the bottom level; its code grid is
            image_size / 2**num_downsamples.
        num_levels (`int`, 1): 1, or 2 for a VQ-VAE-2 hierarchy whose top level has one more
            stride-2 step (stride 8 over a stride-4 bottom by default).
        code_dim (`int`, 64): dimension of each latent vector and codeword.
        codebook_size (`int`, 512): K, the number of codewords.
        quantizer (`str`, "vq"): one of "vq", "vq-ema", "gmvq", "scq".
        quantizer_options (`dict`, {}): keyword options of that quantizer (see docs/quantizers.md).
    """

    model_type = "vqgen-vqvae"

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 28,
        hidden_channels: int = 64,
        num_res_blocks: int = 2,
        num_downsamples: int = 2,
        num_levels: int = 1,
        code_dim: int = 64,
        codebook_size: int = 512,
        quantizer: str = "vq",
        quantizer_options: dict | None = None,
        **kwargs,
    ):
        self.in_channels = in_channels
        self.image_size = image_size
        self.hidden_channels = hidden_channels
        self.num_res_blocks = num_res_blocks
        self.num_downsamples = num_downsamples
        self.num_levels = num_levels
        self.code_dim = code_dim
        self.codebook_size = codebook_size
        self.quantizer = quantizer
        self.quantizer_options = dict(quantizer_options or {})
        if num_levels not in (1, 2):
            raise ValueError(f"num_levels must be 1 (VQ-VAE) or 2 (VQ-VAE-2), got {num_levels}.")
        if image_size % self.total_stride:
            raise ValueError(
                f"image_size {image_size} is not divisible by the total stride {self.total_stride} "
                f"(2**(num_downsamples + num_levels - 1)); use a multiple of {self.total_stride}."
            )
        super().__init__(**kwargs)

    @property
    def total_stride(self) -> int:
        return 2 ** (self.num_downsamples + self.num_levels - 1)

    @property
    def code_grids(self) -> list[tuple[int, int]]:
        """(h, w) of each level's codes, top level first."""
        sides = [self.image_size // 2 ** (self.num_downsamples + level) for level in reversed(range(self.num_levels))]
        return [(side, side) for side in sides]
