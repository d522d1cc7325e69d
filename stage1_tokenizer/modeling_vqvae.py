"""The VQ-VAE tokenizer, for images or raw audio: one level (van den Oord et al. 2017) or a
two-level hierarchy (VQ-VAE-2, Razavi et al. 2019, section 3.1 and figure 2a):

    one level:  x -> encoder -> quantizer -> decoder -> x'
    two levels: x -> encoder (stride 4) = h -> top_encoder (stride 2 more) -> top_quantizer = q_top
                top_decoder(q_top) (back at stride 4) ++ h -> pre_quantize -> quantizer = q_bottom
                decoder(upsample_top(q_top) ++ q_bottom) -> x'

The top level's decoded features condition the bottom level's encoding; the decoder takes both.

Audio (`modality="audio"`, the paper's section 4.3) uses the same structure in 1-D: six stride-2
convolutions turn a waveform into 64x fewer codes. Its decoder is either the paper's WaveNet
(`stage1_tokenizer.wavenet.WaveNetDecoder`: mu-law classes, cross-entropy, sampled one step at a
time by `decode`) or a transposed-convolution decoder trained with a multi-resolution STFT loss.
Both take a speaker embedding when the config names speakers; the encoder never sees it, so
decoding the same codes with another speaker's id converts the voice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .audio_features import mu_law_decode, mu_law_encode, multi_resolution_stft_loss
from .common.checks import check_ids_in_range
from .common.loading import StrictLoading
from .configuration_vqvae import VQVAEConfig
from .networks import ConvDecoder, ConvEncoder, conv_classes
from .quantizers import build_quantizer
from .wavenet_decoder import WaveNetDecoder


@dataclass
class VQVAEOutput(ModelOutput):
    """reconstruction: like the input. loss = reconstruction_loss + quantizer_loss.
    codes: one LongTensor per level, top level first. perplexity: one scalar per level.
    reconstruction_loss: MSE (images), the multi-resolution STFT loss (audio, conv decoder) or the
    cross-entropy of the mu-law samples in nats (audio, WaveNet decoder, whose `reconstruction` is
    then teacher-forced: each sample's most likely value given the true samples before it).
    logits: the WaveNet decoder's (B, T, mu_law_channels)."""

    reconstruction: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    codes: list[torch.Tensor] | None = None
    reconstruction_loss: torch.Tensor | None = None
    quantizer_loss: torch.Tensor | None = None
    perplexity: list[torch.Tensor] | None = None
    logits: torch.Tensor | None = None


class VQVAEModel(StrictLoading, PreTrainedModel):
    config_class = VQVAEConfig
    base_model_prefix = "vqvae"
    main_input_name = "inputs"

    def __init__(self, config: VQVAEConfig):
        super().__init__(config)
        c = config
        dims = 1 if c.modality == "audio" else 2
        conv, transposed = conv_classes(dims)
        hierarchical = c.num_levels == 2
        # The bottom encoder outputs features (hierarchical) or the codes' vectors (one level).
        self.encoder = ConvEncoder(
            c.in_channels, c.hidden_channels, c.hidden_channels if hierarchical else c.code_dim,
            c.num_downsamples, c.num_res_blocks, dims,
        )  # fmt: skip
        self.quantizer = build_quantizer(c.quantizer, c.codebook_size, c.code_dim, **c.quantizer_options)
        if hierarchical:
            self.top_encoder = ConvEncoder(c.hidden_channels, c.hidden_channels, c.code_dim, 1, c.num_res_blocks, dims)
            self.top_quantizer = build_quantizer(c.quantizer, c.codebook_size, c.code_dim, **c.quantizer_options)
            self.top_decoder = ConvDecoder(c.code_dim, c.hidden_channels, c.code_dim, 1, c.num_res_blocks, dims)
            self.pre_quantize = conv(c.hidden_channels + c.code_dim, c.code_dim, 1)
            self.upsample_top = transposed(c.code_dim, c.code_dim, 4, stride=2, padding=1)
        latent_channels = c.code_dim * c.num_levels
        speaker_channels = c.speaker_dim if c.speakers else 0
        if c.speakers:
            self.speaker_embedding = nn.Embedding(len(c.speakers), c.speaker_dim)
        if self.autoregressive_decoder:
            self.decoder = WaveNetDecoder(
                latent_channels, 2**c.num_downsamples, c.wavenet_channels, c.wavenet_skip_channels,
                c.wavenet_layers, c.wavenet_dilation_cycle, speaker_channels, c.mu_law_channels,
            )  # fmt: skip
        else:  # the speaker embedding rides along the code vectors as extra input channels (every_block: and biases each block)
            self.decoder = ConvDecoder(
                c.in_channels, c.hidden_channels, latent_channels + speaker_channels, c.num_downsamples, c.num_res_blocks, dims,
                stage_res_blocks=1 if c.modality == "audio" else 0,
                condition_channels=speaker_channels if c.speaker_conditioning == "every_block" else 0,
            )  # fmt: skip
        self.post_init()

    @property
    def quantizers(self) -> list[nn.Module]:
        """One quantizer per level, top level first."""
        return [self.top_quantizer, self.quantizer] if self.config.num_levels == 2 else [self.quantizer]

    @property
    def autoregressive_decoder(self) -> bool:
        return self.config.modality == "audio" and self.config.audio_decoder == "wavenet"

    def _init_weights(self, module):
        # Keep PyTorch's default (Kaiming-uniform) conv init; transformers' N(0, 0.02) starves ReLU nets.
        pass

    # -- bits -----------------------------------------------------------------------------------
    @property
    def code_bits(self) -> float:
        """Bits of one image's codes, all levels (audio: bits per second of audio)."""
        if self.config.modality == "audio":
            return sum(self.config.code_rates) * math.log2(self.config.codebook_size)
        return sum(h * w for h, w in self.config.code_grids) * math.log2(self.config.codebook_size)

    @property
    def compression_ratio(self) -> float:
        """Input bits (8 per subpixel; 16 per audio sample) over code bits, as in the paper's 42.7x
        for ImageNet and 64x fewer codes than samples for speech."""
        c = self.config
        input_bits = 16 * c.sampling_rate if c.modality == "audio" else c.in_channels * c.image_size**2 * 8
        return input_bits / self.code_bits

    # -- checks -------------------------------------------------------------------------------------
    def _check_inputs(self, inputs: torch.Tensor) -> None:
        c, stride = self.config, self.config.total_stride
        audio = c.modality == "audio"
        if not torch.is_tensor(inputs) or not inputs.is_floating_point():
            kind = inputs.dtype if torch.is_tensor(inputs) else type(inputs).__name__
            fix = "convert integer PCM to float (int16: divide by 32768)" if audio else "convert to float and divide 8-bit images by 255"
            raise TypeError(f"expected float {'waveforms in [-1, 1]' if audio else 'images in [0, 1]'}, got {kind}: {fix}.")
        low, high = (-1.0, 1.0) if audio else (0.0, 1.0)
        if inputs.numel() and (inputs.min() < low - 0.01 or inputs.max() > high + 0.01):  # a little overshoot is fine
            fix = "scale the waveforms into [-1, 1]" if audio else "divide 8-bit images by 255"
            raise ValueError(
                f"expected values in [{low:g}, {high:g}], got [{inputs.min().item():.4g}, {inputs.max().item():.4g}]: {fix}."
            )
        if audio:
            if inputs.ndim != 3 or inputs.shape[1] != 1:
                raise ValueError(f"expected mono waveforms shaped (B, 1, T), got {tuple(inputs.shape)}.")
            if inputs.shape[2] % stride:
                raise ValueError(
                    f"waveform length {inputs.shape[2]} is not divisible by the total stride {stride} samples per code; "
                    f"crop or zero-pad it to a multiple of {stride} (stage1_tokenizer.data.AudioCrops does)."
                )
            return
        if inputs.ndim != 4 or inputs.shape[1] != c.in_channels:
            raise ValueError(f"expected images shaped (B, {c.in_channels}, H, W), got {tuple(inputs.shape)}.")
        if inputs.shape[2] % stride or inputs.shape[3] % stride:
            raise ValueError(
                f"image size {tuple(inputs.shape[2:])} is not divisible by the total stride {stride}; "
                f"resize or crop the images to a multiple of {stride}."
            )

    def speaker_vectors(self, speaker, batch_size: int) -> torch.Tensor | None:
        """Speaker ids (B,) or one id -> embeddings (B, speaker_dim); None for a model without speakers."""
        names = self.config.speakers
        if not names:
            if speaker is not None:
                raise ValueError("this tokenizer has no speakers (config.speakers is empty): pass speaker=None.")
            return None
        if speaker is None:
            raise ValueError(
                f"this tokenizer's decoder is conditioned on the speaker: pass speaker= ids in [0, {len(names) - 1}] "
                f"(config.speakers: {', '.join(names[:6])}{', ...' if len(names) > 6 else ''})."
            )
        speaker = torch.as_tensor(speaker, device=self.device)
        if speaker.ndim == 0:
            speaker = speaker.expand(batch_size)
        if speaker.dtype != torch.long or speaker.shape != (batch_size,):
            raise ValueError(f"speaker must be a LongTensor of {batch_size} ids, got {speaker.dtype} {tuple(speaker.shape)}.")
        check_ids_in_range(speaker, len(names), "speaker ids", detail=f" ({len(names)} speakers)")
        return self.speaker_embedding(speaker)

    # -- forward ----------------------------------------------------------------------------------
    def _quantize(self, inputs: torch.Tensor) -> list:
        """The quantizer outputs of each level, top level first."""
        features = self.encoder(inputs)  # (B, C, *grid)
        outputs = []
        if self.config.num_levels == 2:
            top = self.top_quantizer(self.top_encoder(features).movedim(1, -1))  # codes (B, *grid / 2)
            conditioned = torch.cat([self.top_decoder(top.quantized.movedim(-1, 1)), features], dim=1)
            features = self.pre_quantize(conditioned)
            outputs.append(top)
        outputs.append(self.quantizer(features.movedim(1, -1)))  # codes (B, *grid)
        return outputs

    def _decoder_input(self, vectors: list[torch.Tensor]) -> torch.Tensor:
        """Channel-last quantized vectors per level (top first) -> the decoder's latents (B, D * levels, *grid)."""
        maps = [v.movedim(-1, 1) for v in vectors]
        if len(maps) == 2:
            maps[0] = self.upsample_top(maps[0])
        return torch.cat(maps, dim=1)

    def _decode_latents(self, latents: torch.Tensor, speaker: torch.Tensor | None) -> torch.Tensor:
        """One-pass decoders: latents (+ the speaker embedding as constant channels) -> output."""
        if speaker is None:
            return self.decoder(latents)
        channels = speaker.reshape(*speaker.shape, *([1] * (latents.ndim - 2))).expand(-1, -1, *latents.shape[2:])
        condition = speaker if self.config.speaker_conditioning == "every_block" else None
        return self.decoder(torch.cat([latents, channels], dim=1), condition)

    def forward(self, inputs: torch.Tensor, speaker=None) -> VQVAEOutput:
        """inputs: images (B, C, H, W) in [0, 1] or waveforms (B, 1, T) in [-1, 1]; speaker: ids (B,)
        for a model with speakers."""
        self._check_inputs(inputs)
        speaker = self.speaker_vectors(speaker, inputs.shape[0])
        outputs = self._quantize(inputs)
        latents = self._decoder_input([o.quantized for o in outputs])
        logits = None
        if self.autoregressive_decoder:
            targets = mu_law_encode(inputs[:, 0], self.config.mu_law_channels)  # (B, T)
            logits = self.decoder(targets, latents, speaker)
            reconstruction_loss = F.cross_entropy(logits.transpose(1, 2), targets)
            reconstruction = mu_law_decode(logits.argmax(-1), self.config.mu_law_channels).unsqueeze(1)
        else:
            reconstruction = self._decode_latents(latents, speaker)
            if self.config.modality == "audio":
                reconstruction_loss = multi_resolution_stft_loss(reconstruction, inputs, self.config.stft_resolutions)
            else:
                reconstruction_loss = F.mse_loss(reconstruction, inputs)
        quantizer_loss = sum(o.loss for o in outputs)
        return VQVAEOutput(
            reconstruction=reconstruction,
            loss=reconstruction_loss + quantizer_loss,
            codes=[o.codes for o in outputs],
            reconstruction_loss=reconstruction_loss,
            quantizer_loss=quantizer_loss,
            perplexity=[o.perplexity for o in outputs],
            logits=logits,
        )

    @torch.no_grad()
    def encode(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """Codes per level, top first: LongTensors (B, h, w) for images, (B, T / stride) for audio.
        The encoder never sees the speaker."""
        self._check_inputs(inputs)
        return [output.codes for output in self._quantize(inputs)]

    def decode(
        self,
        codes: list[torch.Tensor] | torch.Tensor,
        speaker=None,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        progress: bool = False,
    ) -> torch.Tensor:
        """Images (B, C, H, W) or waveforms (B, 1, T) from codes: a list with one LongTensor per
        level, top first (or, for one level, that tensor). Refuses ids outside the codebook and
        grids of the wrong shape. speaker: ids (B,) or one id, for a model with speakers; another
        speaker than the one who spoke converts the voice.
        The WaveNet decoder samples (temperature, generator; use_cache=False runs the slow
        reference path, which gives the same samples); the other decoders are deterministic."""
        if torch.is_tensor(codes):
            codes = [codes]
        c, levels = self.config, self.config.num_levels
        if len(codes) != levels:
            raise ValueError(f"this tokenizer has {levels} level(s), got codes for {len(codes)} levels.")
        bottom = codes[-1]
        spatial = 1 if c.modality == "audio" else 2
        layout = "(B, T)" if spatial == 1 else "(B, h, w)"
        if bottom.ndim != 1 + spatial:
            raise ValueError(f"codes must be LongTensors {layout}, got shape {tuple(bottom.shape)}.")
        sizes = tuple(bottom.shape[1:])
        expected = [tuple(s // 2 for s in sizes), sizes][-levels:]
        for level, (grid, shape) in enumerate(zip(codes, expected)):
            if grid.dtype != torch.long or tuple(grid.shape) != (bottom.shape[0], *shape):
                levels_hint = (
                    f"{c.code_strides} samples per code" if spatial == 1
                    else f"{c.code_grids} for {c.image_size}x{c.image_size} images"
                )  # fmt: skip
                raise ValueError(
                    f"codes of level {level} (top first) must be a LongTensor {(bottom.shape[0], *shape)}, "
                    f"got {grid.dtype} {tuple(grid.shape)}; levels: {levels_hint}."
                )
            check_ids_in_range(
                grid, c.codebook_size, "code ids", ending=f" at level {level}: were these codes made by another tokenizer?"
            )
        speaker = self.speaker_vectors(speaker, bottom.shape[0])
        vectors = [quantizer.codebook[grid] for quantizer, grid in zip(self.quantizers, codes)]  # (B, *grid, D)
        latents = self._decoder_input(vectors)
        if self.autoregressive_decoder:
            classes = self.decoder.generate(
                latents, speaker, temperature=temperature, generator=generator, use_cache=use_cache, progress=progress
            )
            return mu_law_decode(classes, c.mu_law_channels).unsqueeze(1)
        output = self._decode_latents(latents, speaker)
        return output.clamp(-1.0, 1.0) if c.modality == "audio" else output
