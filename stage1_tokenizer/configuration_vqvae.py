"""Configuration of the image VQ-VAE tokenizer. Issue 3 adds the hierarchical (VQ-VAE-2) levels."""

from __future__ import annotations

from transformers import PretrainedConfig


class VQVAEConfig(PretrainedConfig):
    r"""
    Args:
        in_channels (`int`, 1): image channels (1 for Fashion-MNIST, 3 for RGB).
        image_size (`int`, 28): side of the (square) training images; used for the bit counts.
        hidden_channels (`int`, 64): width of the encoder and decoder.
        num_res_blocks (`int`, 2): residual blocks in the encoder and in the decoder.
        num_downsamples (`int`, 2): stride-2 convolutions; the code grid is image_size / 2**num_downsamples.
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
        self.code_dim = code_dim
        self.codebook_size = codebook_size
        self.quantizer = quantizer
        self.quantizer_options = dict(quantizer_options or {})
        super().__init__(**kwargs)

    @property
    def code_grid(self) -> tuple[int, int]:
        side = self.image_size // 2**self.num_downsamples
        return (side, side)
