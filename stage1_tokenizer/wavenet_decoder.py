"""The speech tokenizer's WaveNet decoder (van den Oord et al. 2017, section 4.3): a WaveNet over
the mu-law classes of the samples, locally conditioned on the codes' vectors and globally on a
speaker embedding. The dilated stack is the one stage two's WaveNet prior uses
(`stage1_tokenizer.common.wavenet`); sampling is the one loop of `common.sampling`.

    x_t    = embed(class_{t-1})   (class_{-1} = silence)
    skips  = DilatedCausalStack(x, g = speaker, l = conv3(code vectors), 1 code : `upsample` samples)
    p(class_t | class_<t, codes, speaker) = softmax(W_2 relu(W_1 relu(skips_t)))

The codes are known in full before decoding, so their projection (a window-3 convolution) looks
at neighbouring codes; only the samples are causal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common.sampling import sample_autoregressive
from .common.wavenet import DilatedCausalStack


class WaveNetDecoder(nn.Module):
    def __init__(
        self,
        latent_channels: int,
        upsample: int,
        channels: int = 64,
        skip_channels: int = 128,
        num_layers: int = 20,
        dilation_cycle: int = 10,
        speaker_channels: int = 0,
        mu_law_channels: int = 256,
    ):
        super().__init__()
        self.upsample, self.mu_law_channels = upsample, mu_law_channels
        self.silence = mu_law_channels // 2  # mu_law_encode(0), in plain Python: init may run on the meta device
        self.sample_embedding = nn.Embedding(mu_law_channels, channels)
        self.latent_projection = nn.Conv1d(latent_channels, channels, 3, padding=1)
        self.stack = DilatedCausalStack(
            channels, skip_channels, num_layers, dilation_cycle, 2, speaker_channels, channels, local_upsample=upsample
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Linear(skip_channels, skip_channels), nn.ReLU(), nn.Linear(skip_channels, mu_law_channels)
        )

    def forward(self, classes: torch.Tensor, latents: torch.Tensor, speaker: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: classes (B, T) of the target samples, latents (B, L, T / upsample),
        speaker (B, G) or None -> logits (B, T, mu_law_channels) of each sample given the earlier ones."""
        previous = F.pad(classes[:, :-1], (1, 0), value=self.silence)
        skips = self.stack(self.sample_embedding(previous).transpose(1, 2), speaker, self.latent_projection(latents))
        return self.head(skips.transpose(1, 2))

    @torch.no_grad()
    def generate(
        self,
        latents: torch.Tensor,
        speaker: torch.Tensor | None = None,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        progress: bool = False,
    ) -> torch.Tensor:
        """Samples the mu-law classes (B, T = latent steps * upsample), one sample at a time:
        through the stack's queues (use_cache=True) or the whole network over the samples so far
        (the slow reference); both give the same samples for the same generator."""
        batch, length = latents.shape[0], latents.shape[-1] * self.upsample

        def full_logits(classes, t):
            return self(classes[:, : t + 1], latents, speaker)[:, t]

        def start_cache():
            cache = self.stack.init_cache(batch, speaker, self.latent_projection(latents))

            def step(classes, t):
                previous = classes[:, t - 1] if t else classes.new_full((batch,), self.silence)
                return self.head(self.stack.step(self.sample_embedding(previous), cache))

            return step

        return sample_autoregressive(
            batch, length, self.mu_law_channels, full_logits=full_logits, start_cache=start_cache, use_cache=use_cache,
            temperature=temperature, generator=generator, device=latents.device, progress=progress, desc="decode",
        )  # fmt: skip
