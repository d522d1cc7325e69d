"""Configuration of the VQ-VAE tokenizer: images or raw audio, one level (VQ-VAE) or two (VQ-VAE-2).

Every field is declared once, here, with its default and help; the training CLI's `--model.*`
flags and a recipe's `model:` mapping are read from these declarations.
"""

import math
from dataclasses import field

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .quantizers import check_quantizer_options

MODALITIES = ("image", "audio")
AUDIO_DECODERS = ("conv", "wavenet")
SPEAKER_CONDITIONING = ("input", "every_block")


@strict
class VQVAEConfig(PreTrainedConfig):
    r"""The VQ-VAE tokenizer's configuration; each field's help text is beside it."""

    model_type = "vqgen-vqvae"

    modality: str = field(
        default="image",
        metadata={"help": "'image' (2-D convolutions over (C, H, W)) or 'audio' (1-D over raw waveforms (1, T), the paper's speech model)."},
    )
    in_channels: int = field(default=1, metadata={"help": "Image channels (1 gray, 3 RGB); 1 for audio."})
    image_size: int = field(default=28, metadata={"help": "Side of the square training images; fixes the code grids."})
    hidden_channels: int = field(default=64, metadata={"help": "Width of the encoder and decoder."})
    num_res_blocks: int = field(default=2, metadata={"help": "Residual blocks in the encoder and in the decoder."})
    num_downsamples: int | None = field(
        default=None,
        metadata={"help": "Stride-2 convolutions of the bottom level (None: 2 for images, 6 for audio, the paper's)."},
    )
    num_levels: int = field(default=1, metadata={"help": "1 (VQ-VAE) or 2 (VQ-VAE-2: a top level at twice the bottom's stride)."})
    code_dim: int = field(default=64, metadata={"help": "Dimension of each latent vector and codeword."})
    codebook_size: int = field(default=512, metadata={"help": "K, the number of codewords per level."})
    quantizer: str = field(default="vq", metadata={"help": "'vq', 'vq-ema', 'gmvq' or 'scq' (docs/quantizers.md)."})
    quantizer_options: dict = field(
        default_factory=dict, metadata={"help": "Keyword options of the quantizer, e.g. {dead_code_steps: 100}."}
    )
    sampling_rate: int = field(default=16000, metadata={"help": "Audio: samples per second (sources are resampled to it)."})
    audio_decoder: str = field(
        default="conv",
        metadata={"help": "Audio: 'wavenet' (the paper's autoregressive decoder over mu-law classes) or 'conv' (one pass, multi-resolution STFT loss)."},
    )
    speakers: list[str] | None = field(
        default_factory=list,
        metadata={"help": "Audio: speaker names (filled from the training data); with any, the decoder takes a speaker embedding and another speaker's id converts the voice."},
    )
    speaker_dim: int = field(default=64, metadata={"help": "Audio: size of the speaker embedding."})
    speaker_conditioning: str = field(
        default="input",
        metadata={"help": "Conv audio decoder: 'input' (the speaker embedding as constant input channels) or 'every_block' (also a per-block bias in every residual block, as WaveNet conditions every layer)."},
    )
    wavenet_channels: int = field(default=64, metadata={"help": "WaveNet decoder: residual channels."})
    wavenet_skip_channels: int = field(default=128, metadata={"help": "WaveNet decoder: skip channels."})
    wavenet_layers: int = field(default=20, metadata={"help": "WaveNet decoder: gated layers (20 of dilations 1..512 see 2047 samples)."})
    wavenet_dilation_cycle: int = field(default=10, metadata={"help": "WaveNet decoder: dilations 1, 2, ..., 2**(cycle-1), repeated."})
    mu_law_channels: int = field(default=256, metadata={"help": "WaveNet decoder: mu-law classes of its output."})
    stft_resolutions: list[list[int]] | None = field(
        default=None,
        metadata={"help": "Conv audio decoder: [[fft size, hop], ...] of the STFT loss (None: windows of about 32, 64 and 128 ms, hop a quarter)."},
    )

    def __post_init__(self, **kwargs):
        self.speakers = list(self.speakers or [])
        if self.num_downsamples is None:
            self.num_downsamples = 6 if self.modality == "audio" else 2
        if self.stft_resolutions is None:  # windows of about 32, 64 and 128 ms, in powers of two, hop a quarter
            fft = 2 ** max(4, round(math.log2(0.032 * self.sampling_rate)))
            self.stft_resolutions = [[fft * 2**i, fft * 2**i // 4] for i in range(3)]
        self.check()
        super().__post_init__(**kwargs)

    def check(self) -> None:
        """ValueError, naming the value and the fix, for settings no model can be built from."""
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}.")
        for name in ("in_channels", "image_size", "hidden_channels", "code_dim", "sampling_rate", "speaker_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.num_res_blocks < 0 or self.num_downsamples < 1:
            raise ValueError(f"num_res_blocks must be >= 0 and num_downsamples >= 1, got {self.num_res_blocks} and {self.num_downsamples}.")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, got {self.codebook_size}.")
        if self.num_levels not in (1, 2):
            raise ValueError(f"num_levels must be 1 (VQ-VAE) or 2 (VQ-VAE-2), got {self.num_levels}.")
        check_quantizer_options(self.quantizer, self.quantizer_options, self.codebook_size, self.code_dim)
        if self.modality == "image" and self.image_size % self.total_stride:
            lower = self.image_size // self.total_stride * self.total_stride
            raise ValueError(
                f"image_size {self.image_size} is not divisible by the total stride {self.total_stride} "
                f"(2**(num_downsamples + num_levels - 1)); use {lower or self.total_stride} or {lower + self.total_stride}."
            )
        if self.speakers and self.modality != "audio":
            raise ValueError("speakers condition the audio decoder: set modality='audio' or drop speakers.")
        if self.modality == "audio":
            if self.in_channels != 1:
                raise ValueError(f"audio tokenizers take mono waveforms: in_channels must be 1, got {self.in_channels}.")
            if self.audio_decoder not in AUDIO_DECODERS:
                raise ValueError(f"audio_decoder must be one of {AUDIO_DECODERS}, got {self.audio_decoder!r}.")
        if self.speaker_conditioning not in SPEAKER_CONDITIONING:
            raise ValueError(f"speaker_conditioning must be one of {SPEAKER_CONDITIONING}, got {self.speaker_conditioning!r}.")
        if not all(len(r) == 2 and min(r) >= 1 for r in self.stft_resolutions):
            raise ValueError(f"stft_resolutions must be [[fft size, hop], ...] of positive ints, got {self.stft_resolutions}.")

    @property
    def total_stride(self) -> int:
        """Input pixels per code side (images) or samples per code (audio) at the top level."""
        return 2 ** (self.num_downsamples + self.num_levels - 1)

    @property
    def code_strides(self) -> list[int]:
        """Input steps per code of each level, top level first (audio: samples per code)."""
        return [2 ** (self.num_downsamples + level) for level in reversed(range(self.num_levels))]

    @property
    def code_grids(self) -> list[tuple[int, ...]]:
        """(h, w) of each level's codes for an image_size image, top level first. Audio codes
        have a length that follows the audio's (see code_rates); this raises for audio."""
        if self.modality == "audio":
            raise ValueError("audio codes have no fixed grid: their length is samples / code_strides (see code_rates).")
        return [(self.image_size // stride,) * 2 for stride in self.code_strides]

    @property
    def code_rates(self) -> list[float]:
        """Audio: codes per second of each level, top level first."""
        return [self.sampling_rate / stride for stride in self.code_strides]


__all__ = ["VQVAEConfig"]
