"""WaveNet prior over code sequences (van den Oord et al. 2016, "WaveNet: A Generative Model for
Raw Audio"), as the VQ-VAE paper uses for speech codes.

    x_t   = embed(code_{t-1})   (x_0 = a learned start vector)          # (B, C, T)
    skips = DilatedCausalStack(x, g = embed(condition), l = context)    # stage1_tokenizer.wavenet
    p(code_t | code_<t, condition, context) = softmax(W_2 relu(W_1 relu(skips_t)))

Global conditioning: a class or speaker embedding (num_classes + 1 rows, the last the null class
of classifier-free guidance). Local conditioning: the upper level's codes, embedded, upsampled to
the sequence rate (nearest) and smoothed by a non-causal convolution (they are known in full).
Codes of any shape are modelled in raster order (a (h, w) grid is read row by row).

Cached sampling keeps a queue per layer (Paine et al. 2016): one k-tap product per layer and step.
"""

from dataclasses import dataclass, field

import torch
from huggingface_hub.dataclasses import strict
from torch import nn

from stage1_tokenizer.common.wavenet import DilatedCausalStack, StackCache

from .prior import AutoregressivePrior, PriorConfig, upsample_context


@strict
class WaveNetConfig(PriorConfig):
    r"""The WaveNet prior's configuration (and `PriorConfig`'s fields)."""

    model_type = "vqgen-wavenet-prior"

    residual_channels: int = field(default=64, metadata={"help": "Width of the residual path."})
    skip_channels: int = field(default=128, metadata={"help": "Width of the skip path and the output head."})
    num_layers: int = field(default=20, metadata={"help": "Gated layers."})
    dilation_cycle: int = field(
        default=10, metadata={"help": "Dilations 1, 2, ..., 2**(cycle-1), repeated; with kernel 2 the receptive field is 1 + their sum."}
    )
    kernel_size: int = field(default=2, metadata={"help": "Taps of each dilated convolution."})
    condition_channels: int = field(default=64, metadata={"help": "Size of the class / speaker embedding."})
    context_channels: int = field(default=64, metadata={"help": "Width of the local conditioning (context) features."})

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if min(self.residual_channels, self.skip_channels, self.num_layers, self.dilation_cycle) < 1 or self.kernel_size < 2:
            raise ValueError(
                f"WaveNetConfig needs positive widths and layers and kernel_size >= 2, got residual_channels="
                f"{self.residual_channels}, skip_channels={self.skip_channels}, num_layers={self.num_layers}, "
                f"dilation_cycle={self.dilation_cycle}, kernel_size={self.kernel_size}."
            )


@dataclass
class WaveNetCache:
    stack: StackCache
    start: torch.Tensor  # (B, C): the input of step 0


class WaveNetPrior(AutoregressivePrior):
    config_class = WaveNetConfig
    any_length = True  # convolutions: the same weights at every position

    def __init__(self, config: WaveNetConfig):
        super().__init__(config)
        c = config
        self.code_embedding = nn.Embedding(c.codebook_size, c.residual_channels)
        self.start = nn.Parameter(torch.randn(c.residual_channels) * 0.1)
        global_channels = c.condition_channels if c.num_classes else 0
        if c.num_classes:
            self.condition_embedding = nn.Embedding(c.num_classes + 1, c.condition_channels)
        local_channels = c.context_channels if c.context_shape is not None else 0
        if c.context_shape is not None:
            self.context_embedding = nn.Embedding(c.context_codebook_size, c.context_channels)
            conv = nn.Conv1d if len(c.code_shape) == 1 else nn.Conv2d
            self.context_smoothing = conv(c.context_channels, c.context_channels, 3, padding=1)
        self.stack = DilatedCausalStack(
            c.residual_channels, c.skip_channels, c.num_layers, c.dilation_cycle, c.kernel_size,
            global_channels, local_channels,
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.ReLU(), nn.Linear(c.skip_channels, c.skip_channels), nn.ReLU(), nn.Linear(c.skip_channels, c.codebook_size)
        )
        self.post_init()

    def _init_weights(self, module):
        pass  # PyTorch's default initialisation (transformers' N(0, 0.02) is too small for these nets)

    @property
    def receptive_field(self) -> int:
        return self.stack.receptive_field

    def _conditioning(self, condition, context, length: int):
        """(B, G) global and (B, L, length) local conditioning, or None."""
        global_cond = self.condition_embedding(condition) if condition is not None else None
        local_cond = None
        if context is not None:
            embedded = self.context_embedding(context).movedim(-1, 1)  # (B, L, *context_shape)
            local_cond = self.context_smoothing(upsample_context(embedded, self.config.code_shape))
            local_cond = local_cond.flatten(2)[:, :, :length]  # (B, L, T) in raster order
        return global_cond, local_cond

    def _logits(self, codes, condition, context):
        batch = codes.shape[0]
        flat = codes.reshape(batch, -1)  # (B, T) raster order
        inputs = torch.cat([self.start.expand(batch, 1, -1), self.code_embedding(flat[:, :-1])], dim=1)  # (B, T, C)
        global_cond, local_cond = self._conditioning(condition, context, flat.shape[1])
        skips = self.stack(inputs.transpose(1, 2), global_cond, local_cond)  # (B, S, T)
        return self.head(skips.transpose(1, 2)).reshape(*codes.shape, -1)  # (*codes.shape, K)

    def _init_cache(self, batch_size, condition, context):
        global_cond, local_cond = self._conditioning(condition, context, self.config.sequence_length)
        return WaveNetCache(self.stack.init_cache(batch_size, global_cond, local_cond), self.start.expand(batch_size, -1))

    def _cached_logits(self, cache: WaveNetCache, codes, index):
        if cache.stack.step != index:
            raise RuntimeError(f"the WaveNet cache is at step {cache.stack.step}, asked for position {index}.")
        x = cache.start if index == 0 else self.code_embedding(codes.reshape(codes.shape[0], -1)[:, index - 1])
        return self.head(self.stack.step(x, cache.stack))  # (B, K)
