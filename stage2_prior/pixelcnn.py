"""Gated PixelCNN prior over 2-D code grids (van den Oord et al. 2016, "Conditional Image Generation
with PixelCNN Decoders"), the prior of the VQ-VAE (van den Oord et al. 2017) and of each level of
VQ-VAE-2 (Razavi et al. 2019).

The network (vertical and horizontal gated stacks without a blind spot, the output head, and the
row and pixel caches of Ramachandran et al. 2017 for sampling) is `stage1_tokenizer.pixelcnn.
GatedPixelCNN`, shared with stage one's latent VQ-VAE decoder; its docstring has the equations.
The prior supplies its conditioning, both known in full before sampling:

    y = class_embedding(condition)          # (B, C): num_classes + 1 rows, the last the null class
                                            # of classifier-free guidance; global conditioning
    s = context_net(upsample(context_embedding(context)))   # (B, Cc, h, w): local conditioning
    p(code_(r,c) | codes before (r, c), y, s) = softmax(GatedPixelCNN(codes, y, s)[r, c])

Context (a lower level of VQ-VAE-2, conditioned on the codes of the level above): the upper codes
are embedded, upsampled onto the grid (nearest, integer ratio) and smoothed by conv3x3-relu-conv3x3;
each layer projects them by a 1x1 (S_v, S_h; section 2.3's location-dependent conditioning).
"""

from dataclasses import field

from huggingface_hub.dataclasses import strict
from torch import nn

from stage1_tokenizer.common.pixelcnn import GatedPixelCNN, PixelCNNCache

from .prior import AutoregressivePrior, PriorConfig, upsample_context


@strict
class PixelCNNConfig(PriorConfig):
    r"""The gated PixelCNN prior's configuration (and `PriorConfig`'s fields)."""

    model_type = "vqgen-pixelcnn-prior"

    hidden_channels: int = field(default=128, metadata={"help": "C, the width of both stacks and of the class embedding."})
    num_layers: int = field(default=15, metadata={"help": "Gated layers, each with a vertical and a horizontal half."})
    kernel_size: int = field(
        default=5,
        metadata={"help": "k, odd and >= 3: vertical kernel (k//2+1) x k, horizontal 1 x (k//2+1); L layers reach L*(k//2)+1 rows up."},
    )
    output_channels: int = field(default=512, metadata={"help": "Hidden width of the output head (relu, 1x1, relu, 1x1 -> K)."})
    context_channels: int = field(default=128, metadata={"help": "Width of the context (upper-level codes) features."})

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if len(self.code_shape) != 2:
            raise ValueError(
                f"PixelCNN models 2-D code grids: code_shape must be (h, w), got {self.code_shape}; "
                "use the WaveNet or transformer prior for sequences."
            )
        if self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 3 (a centred k-wide row above each position), got {self.kernel_size}.")
        if min(self.hidden_channels, self.num_layers, self.output_channels, self.context_channels) < 1:
            raise ValueError(
                f"PixelCNNConfig needs positive widths and layers, got hidden_channels={self.hidden_channels}, "
                f"num_layers={self.num_layers}, output_channels={self.output_channels}, context_channels={self.context_channels}."
            )


class PixelCNNPrior(AutoregressivePrior):
    config_class = PixelCNNConfig

    def __init__(self, config: PixelCNNConfig):
        super().__init__(config)
        c = config
        if c.num_classes:
            self.class_embedding = nn.Embedding(c.num_classes + 1, c.hidden_channels)  # last row: null class
        if c.context_shape is not None:
            self.context_embedding = nn.Embedding(c.context_codebook_size, c.context_channels)
            self.context_net = nn.Sequential(
                nn.Conv2d(c.context_channels, c.context_channels, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(c.context_channels, c.context_channels, 3, padding=1),
            )
        self.network = GatedPixelCNN(
            c.codebook_size, c.codebook_size, c.hidden_channels, c.num_layers, c.kernel_size, c.output_channels,
            condition_channels=c.hidden_channels if c.num_classes else 0,
            context_channels=c.context_channels if c.context_shape is not None else 0,
        )  # fmt: skip
        self.post_init()

    def _init_weights(self, module):
        pass  # PyTorch's default initialisation (transformers' N(0, 0.02) starves these ReLU/gated nets)

    def _conditioning(self, condition, context):
        """The network's global (B, C) and local (B, Cc, h, w) conditioning, each None when absent."""
        class_embedding = self.class_embedding(condition) if condition is not None else None  # (B, C)
        context_features = None
        if context is not None:
            embedded = self.context_embedding(context).permute(0, 3, 1, 2)  # (B, Cc, *context_shape)
            upsampled = upsample_context(embedded, self.config.code_shape)  # (B, Cc, h, w)
            context_features = self.context_net(upsampled)  # (B, Cc, h, w)
        return class_embedding, context_features

    def _logits(self, codes, condition, context):
        """codes (B, h', w), h' <= h -> logits (B, h', w, K) (the network reads the first h' rows of s)."""
        return self.network(codes, *self._conditioning(condition, context))

    # -- fast generation: the network's row and pixel caches ---------------------------------------
    def _init_cache(self, batch_size, condition, context) -> PixelCNNCache:
        return self.network.init_cache(batch_size, self.config.code_shape, *self._conditioning(condition, context))

    def _cached_logits(self, cache: PixelCNNCache, codes, index):
        if index != cache.next_index:
            raise RuntimeError(f"the PixelCNN cache is at position {cache.next_index}, asked for position {index}.")
        return self.network.step(cache, codes)  # (B, K)
