"""Configuration of the VQ-VAE tokenizer: images or raw audio, one level (VQ-VAE) or two (VQ-VAE-2)."""

from __future__ import annotations

import math

from transformers import PretrainedConfig

MODALITIES = ("image", "audio")
AUDIO_DECODERS = ("conv", "wavenet")


class VQVAEConfig(PretrainedConfig):
    r"""
    Args:
        modality (`str`, "image"): "image" (2-D convolutions over (C, H, W)) or "audio" (1-D over
            raw waveforms (1, T), the paper's speech model).
        in_channels (`int`, 1): image channels (1 for Fashion-MNIST, 3 for RGB); 1 for audio.
        image_size (`int`, 28): side of the (square) training images; used for the bit counts.
        hidden_channels (`int`, 64): width of the encoder and decoder.
        num_res_blocks (`int`, 2): residual blocks in the encoder and in the decoder.
        num_downsamples (`int`, 2 for images, 6 for audio): stride-2 convolutions of the bottom
            level; its code grid is image_size / 2**num_downsamples, its code rate
            sampling_rate / 2**num_downsamples.
        num_levels (`int`, 1): 1, or 2 for a VQ-VAE-2 hierarchy whose top level has one more
            stride-2 step (stride 8 over a stride-4 bottom by default).
        code_dim (`int`, 64): dimension of each latent vector and codeword.
        codebook_size (`int`, 512): K, the number of codewords.
        quantizer (`str`, "vq"): one of "vq", "vq-ema", "gmvq", "scq".
        quantizer_options (`dict`, {}): keyword options of that quantizer (see docs/quantizers.md).

    Audio only:
        sampling_rate (`int`, 16000): samples per second of the waveforms.
        audio_decoder (`str`, "conv"): "wavenet", the paper's autoregressive decoder (mu-law classes,
            cross-entropy; sampled one step at a time), or "conv", a transposed-convolution
            decoder trained with a multi-resolution STFT loss (one pass; for when WaveNet
            decoding is too slow).
        speakers (`list[str]`, []): speaker names; with any, the decoder is conditioned on a
            speaker embedding (`model(x, speaker=ids)`) and decoding with another speaker's id
            converts the voice. The encoder never sees the speaker.
        speaker_dim (`int`, 64): size of the speaker embedding.
        wavenet_channels (`int`, 64), wavenet_skip_channels (`int`, 128), wavenet_layers
            (`int`, 20), wavenet_dilation_cycle (`int`, 10): the WaveNet decoder's stack
            (`stage1_tokenizer.wavenet`); 20 layers of dilations 1..512 see 2047 samples.
        mu_law_channels (`int`, 256): classes of the WaveNet decoder's output.
        stft_resolutions (`list`, windows of about 32, 64 and 128 ms: [[512, 128], [1024, 256],
            [2048, 512]] at 16 kHz): (fft size, hop) of the conv decoder's multi-resolution STFT loss.
    """

    model_type = "vqgen-vqvae"

    def __init__(
        self,
        modality: str = "image",
        in_channels: int = 1,
        image_size: int = 28,
        hidden_channels: int = 64,
        num_res_blocks: int = 2,
        num_downsamples: int | None = None,
        num_levels: int = 1,
        code_dim: int = 64,
        codebook_size: int = 512,
        quantizer: str = "vq",
        quantizer_options: dict | None = None,
        sampling_rate: int = 16000,
        audio_decoder: str = "conv",
        speakers: list[str] | None = None,
        speaker_dim: int = 64,
        wavenet_channels: int = 64,
        wavenet_skip_channels: int = 128,
        wavenet_layers: int = 20,
        wavenet_dilation_cycle: int = 10,
        mu_law_channels: int = 256,
        stft_resolutions: list | None = None,
        **kwargs,
    ):
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}.")
        self.modality = modality
        self.in_channels = in_channels
        self.image_size = image_size
        self.hidden_channels = hidden_channels
        self.num_res_blocks = num_res_blocks
        self.num_downsamples = num_downsamples if num_downsamples is not None else (6 if modality == "audio" else 2)
        self.num_levels = num_levels
        self.code_dim = code_dim
        self.codebook_size = codebook_size
        self.quantizer = quantizer
        self.quantizer_options = dict(quantizer_options or {})
        self.sampling_rate = sampling_rate
        self.audio_decoder = audio_decoder
        self.speakers = list(speakers or [])
        self.speaker_dim = speaker_dim
        self.wavenet_channels = wavenet_channels
        self.wavenet_skip_channels = wavenet_skip_channels
        self.wavenet_layers = wavenet_layers
        self.wavenet_dilation_cycle = wavenet_dilation_cycle
        self.mu_law_channels = mu_law_channels
        if stft_resolutions is None:  # windows of about 32, 64 and 128 ms, in powers of two, hop a quarter
            fft = 2 ** max(4, round(math.log2(0.032 * sampling_rate)))
            stft_resolutions = [[fft * 2**i, fft * 2**i // 4] for i in range(3)]
        self.stft_resolutions = [list(r) for r in stft_resolutions]
        if num_levels not in (1, 2):
            raise ValueError(f"num_levels must be 1 (VQ-VAE) or 2 (VQ-VAE-2), got {num_levels}.")
        if modality == "image" and image_size % self.total_stride:
            raise ValueError(
                f"image_size {image_size} is not divisible by the total stride {self.total_stride} "
                f"(2**(num_downsamples + num_levels - 1)); use a multiple of {self.total_stride}."
            )
        if speakers and modality != "audio":
            raise ValueError("speakers condition the audio decoder: set modality='audio' or drop speakers.")
        if modality == "audio":
            if in_channels != 1:
                raise ValueError(f"audio tokenizers take mono waveforms: in_channels must be 1, got {in_channels}.")
            if audio_decoder not in AUDIO_DECODERS:
                raise ValueError(f"audio_decoder must be one of {AUDIO_DECODERS}, got {audio_decoder!r}.")
            if sampling_rate <= 0:
                raise ValueError(f"sampling_rate must be positive, got {sampling_rate}.")
        super().__init__(**kwargs)

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
