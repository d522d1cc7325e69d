"""Configuration of the latent VQ-VAE: a second VQ-VAE over the codes of a frame tokenizer (the
VQ-VAE paper's DeepMind Lab experiment, 21x21 codes -> 3). Every field is declared once, here."""

from dataclasses import field

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .quantizers import check_quantizer_options

LATENT_DECODERS = ("conv", "pixelcnn")


@strict
class LatentVQVAEConfig(PreTrainedConfig):
    r"""The latent VQ-VAE's configuration; each field's help text is beside it."""

    model_type = "vqgen-latent-vqvae"

    input_codebook_size: int = field(default=512, metadata={"help": "K of the codes it compresses (the frame tokenizer's; read from the code dataset)."})
    input_grid: list[int] | tuple[int, ...] = field(default_factory=lambda: [21, 21], metadata={"help": "Their grid (h, w) (read from the code dataset)."})
    code_grid: list[int] | tuple[int, ...] = field(default_factory=lambda: [3, 1], metadata={"help": "The grid (h, w) of this model's codes (the paper's 3 codes: [3, 1])."})
    codebook_size: int = field(default=512, metadata={"help": "K of this model's codes."})
    code_dim: int = field(default=64, metadata={"help": "Dimension of its codewords."})
    hidden_channels: int = field(default=128, metadata={"help": "Width of the encoder and decoder."})
    num_downsamples: int = field(default=3, metadata={"help": "Stride-2 convolutions of the encoder (21 -> 11 -> 6 -> 3)."})
    num_res_blocks: int = field(default=2, metadata={"help": "Residual blocks in the encoder and the conv decoder."})
    quantizer: str = field(default="vq-ema", metadata={"help": "'vq', 'vq-ema', 'gmvq' or 'scq' (docs/quantizers.md)."})
    quantizer_options: dict = field(default_factory=dict, metadata={"help": "Keyword options of the quantizer."})
    decoder: str = field(default="conv", metadata={"help": "'conv' (the most likely input codes) or 'pixelcnn' (the paper's; decoding samples it)."})
    pixelcnn_layers: int = field(default=8, metadata={"help": "PixelCNN decoder: gated layers."})
    pixelcnn_channels: int = field(default=64, metadata={"help": "PixelCNN decoder: width."})
    input_fingerprint: str | None = field(
        default=None,
        metadata={"help": "Fingerprint of the tokenizer whose codes it models (stage1_tokenizer.code_dataset.tokenizer_fingerprint)."},
    )

    def __post_init__(self, **kwargs):
        self.input_grid, self.code_grid = list(self.input_grid), list(self.code_grid)
        if self.decoder not in LATENT_DECODERS:
            raise ValueError(f"decoder must be one of {LATENT_DECODERS}, got {self.decoder!r}.")
        if len(self.input_grid) != 2 or len(self.code_grid) != 2 or min(self.input_grid + self.code_grid) < 1:
            raise ValueError(f"input_grid and code_grid must be [h, w] of positive sizes, got {self.input_grid} and {self.code_grid}.")
        for name in ("input_codebook_size", "codebook_size"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be at least 2, got {getattr(self, name)}.")
        for name in ("code_dim", "hidden_channels", "pixelcnn_layers", "pixelcnn_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        check_quantizer_options(self.quantizer, self.quantizer_options, self.codebook_size, self.code_dim)
        super().__post_init__(**kwargs)

    @property
    def num_levels(self) -> int:
        return 1  # one level of codes (3 of them), like a one-level VQVAEConfig

    @property
    def code_grids(self) -> list[tuple[int, int]]:
        return [tuple(self.code_grid)]

    @property
    def reduced_grid(self) -> tuple[int, int]:
        """The encoder's feature map after its stride-2 convolutions (3x3 for 21x21 and 3 steps)."""
        h, w = self.input_grid
        for _ in range(self.num_downsamples):
            h, w = (h + 1) // 2, (w + 1) // 2
        return h, w
