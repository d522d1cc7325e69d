"""Gated PixelCNN prior over 2-D code grids (van den Oord et al. 2016, "Conditional Image Generation
with PixelCNN Decoders"), the prior of the VQ-VAE (van den Oord et al. 2017) and of each level of
VQ-VAE-2 (Razavi et al. 2019), with the fast generation caches of Ramachandran et al. 2017 ("Fast
Generation for Convolutional Autoregressive Models").

Notation: k = kernel_size (odd), p = k // 2, C = hidden_channels, codes (B, h, w) in raster order,
x = embed(codes) (B, C, h, w). Two stacks remove the blind spot of masked convolutions (section 2.2):

    vertical stack:   a (p+1) x k convolution over rows r-p .. r, columns c-p .. c+p (zero padding
                      on top and at the sides only): v at row r sees rows <= r, every column in reach.
    horizontal stack: a 1 x (p+1) convolution over columns c-p .. c of the same row. Layer 1 reads x
                      shifted right by one column ("mask A": the current code is excluded), later
                      layers read the stack's own outputs ("mask B": the current position included).

The vertical stack enters the horizontal one shifted down by one row, so the output at (r, c) sees
rows < r through the vertical stack and (r, < c) through the horizontal one: the whole past within
reach and nothing else. Layer l (equation 4 and figure 2), with y the class embedding (num_classes + 1
rows, the last the null class of classifier-free guidance) and s the context features:

    a_v = W_v * v_l + A_v y + S_v s                                    # (B, 2C, h, w)
    v_{l+1} = tanh(a_v[:C]) * sigmoid(a_v[C:])
    a_h = W_h * h_l + W_vh shift_down(a_v) + A_h y + S_h s             # W_vh: 1x1, 2C -> 2C
    g = tanh(a_h[:C]) * sigmoid(a_h[C:])
    h_{l+1} = W_res g (+ h_l from layer 2 on);   skips += W_skip g      # W_res, W_skip: 1x1
    logits = W_2 relu(W_1 relu(skips))                                 # (B, K, h, w)

Context (a lower level of VQ-VAE-2, conditioned on the codes of the level above): the upper codes
are embedded, upsampled onto the grid (nearest, integer ratio), smoothed by conv3x3-relu-conv3x3,
and projected by a 1x1 per layer (S_v, S_h; section 2.3's location-dependent conditioning). The
upper codes are known in full, so s may be seen anywhere.

Reach of L layers at (r, c): rows r-1 .. r-1-L*p above (columns up to c+L*p to the right), and
columns c-1-L*p .. c-1 of the current row. The defaults (15 layers, k=5) reach 31 rows up, 30
columns right and 31 left: a 32x32 grid nearly in full (at column 0, not the last column above).

Cached generation (Ramachandran et al. 2017): the vertical stack keeps ROW caches, the horizontal
stack PIXEL caches, both holding inputs with exactly the zero padding of the full pass:
- when row r starts, the vertical stack runs over row r-1 only: each layer's cache holds its input
  on the last p+1 completed rows (B, C, p+1, w+2p); one unpadded convolution gives a_v of row r-1
  for the whole row, and W_vh a_v is kept for row r;
- at each position the horizontal stack runs through all layers for one pixel: each layer's cache
  holds its input at the last p+1 columns of the current row (B, C, 1, p+1), reset to zeros when a
  row starts, and the same convolution without padding gives a_h at that pixel.
A step costs one pixel through L layers, plus one row of the vertical stack every w steps: the same
per position for any grid size, against a network over all rows so far without the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from stage1_tokenizer.wavenet import gated_activation

from .prior import AutoregressivePrior, PriorConfig, upsample_context


class PixelCNNConfig(PriorConfig):
    r"""
    Args (and those of `PriorConfig`: codebook_size, code_shape (h, w), num_classes, context_shape, ...):
        hidden_channels (`int`, 128): C, the width of both stacks and of the class embedding.
        num_layers (`int`, 15): gated layers, each with a vertical and a horizontal half.
        kernel_size (`int`, 5): k, odd and >= 3; the vertical kernel is (k//2+1) x k, the
            horizontal one 1 x (k//2+1). L layers reach L*(k//2)+1 rows up, L*(k//2) columns right
            and L*(k//2)+1 columns left.
        output_channels (`int`, 512): hidden width of the output head (relu, 1x1, relu, 1x1 -> K).
        context_channels (`int`, 128): width of the context (upper-level codes) features.
    """

    model_type = "vqgen-pixelcnn-prior"

    def __init__(
        self,
        hidden_channels: int = 128,
        num_layers: int = 15,
        kernel_size: int = 5,
        output_channels: int = 512,
        context_channels: int = 128,
        **kwargs,
    ):
        self.hidden_channels = hidden_channels
        self.num_layers = num_layers
        self.kernel_size = kernel_size
        self.output_channels = output_channels
        self.context_channels = context_channels
        super().__init__(**kwargs)
        if len(self.code_shape) != 2:
            raise ValueError(
                f"PixelCNN models 2-D code grids: code_shape must be (h, w), got {self.code_shape}; "
                "use the WaveNet or transformer prior for sequences."
            )
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd and >= 3 (a centred k-wide row above each position), got {kernel_size}."
            )
        if min(hidden_channels, num_layers, output_channels, context_channels) < 1:
            raise ValueError(
                f"PixelCNNConfig needs positive widths and layers, got hidden_channels={hidden_channels}, "
                f"num_layers={num_layers}, output_channels={output_channels}, context_channels={context_channels}."
            )


class GatedLayer(nn.Module):
    """One layer of both stacks (figure 2). The convolutions carry no padding of their own: the full
    pass pads its inputs, the cached pass keeps windows that already hold the padding."""

    def __init__(self, channels: int, kernel_size: int, residual: bool, class_channels: int, context_channels: int):
        super().__init__()
        self.pad = kernel_size // 2
        self.residual = residual
        self.vertical_conv = nn.Conv2d(channels, 2 * channels, (self.pad + 1, kernel_size))
        self.horizontal_conv = nn.Conv2d(channels, 2 * channels, (1, self.pad + 1))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.horizontal_output = nn.Conv2d(channels, 2 * channels, 1)  # residual and skip in one 1x1
        # conditioning of both stacks at once: 2C vertical + 2C horizontal
        self.class_projection = nn.Linear(class_channels, 4 * channels, bias=False) if class_channels else None
        self.context_projection = nn.Conv2d(context_channels, 4 * channels, 1, bias=False) if context_channels else None

    def conditioning(self, class_embedding, context_features):
        """(A_v y + S_v s, A_h y + S_h s), each (B, 2C, 1 | h, 1 | w), or (0, 0) when unconditioned."""
        term = 0
        if class_embedding is not None:
            term = term + self.class_projection(class_embedding)[:, :, None, None]  # (B, 4C, 1, 1)
        if context_features is not None:
            term = term + self.context_projection(context_features)  # (B, 4C, h, w)
        return term.chunk(2, dim=1) if torch.is_tensor(term) else (0, 0)

    def horizontal_outputs(self, horizontal_pre, horizontal):
        """a_h and h_l -> h_{l+1}, skip (the part both passes share)."""
        residual, skip = self.horizontal_output(gated_activation(horizontal_pre)).chunk(2, dim=1)
        return (horizontal + residual if self.residual else residual), skip

    def forward(self, vertical, horizontal, vertical_cond, horizontal_cond):
        """The full pass over (B, C, h, w) inputs -> v_{l+1}, h_{l+1}, skip."""
        p = self.pad
        vertical_pre = self.vertical_conv(F.pad(vertical, (p, p, p, 0))) + vertical_cond  # (B, 2C, h, w)
        above = F.pad(vertical_pre, (0, 0, 1, 0))[:, :, :-1]  # (B, 2C, h, w): row r holds a_v of row r-1
        horizontal_pre = self.horizontal_conv(F.pad(horizontal, (p, 0))) + self.vertical_to_horizontal(above) + horizontal_cond
        return (gated_activation(vertical_pre), *self.horizontal_outputs(horizontal_pre, horizontal))


@dataclass
class PixelCNNCache:
    vertical_conditioning: list[torch.Tensor]  # layer l: (B, 2C, h, w) (expanded views)
    horizontal_conditioning: list[torch.Tensor]  # layer l: (B, 2C, h, w)
    vertical_rows: list[torch.Tensor]  # layer l: (B, C, p+1, w+2p), v_l on the last p+1 completed rows, padded
    from_above: list[torch.Tensor]  # layer l: (B, 2C, 1, w), W_vh a_v_l of the row above the current one
    horizontal_pixels: list[torch.Tensor]  # layer l: (B, C, 1, p+1), h_l at the last p+1 columns of the row
    next_index: int = 0


class PixelCNNPrior(AutoregressivePrior):
    config_class = PixelCNNConfig

    def __init__(self, config: PixelCNNConfig):
        super().__init__(config)
        c = config
        self.code_embedding = nn.Embedding(c.codebook_size, c.hidden_channels)
        if c.num_classes:
            self.class_embedding = nn.Embedding(c.num_classes + 1, c.hidden_channels)  # last row: null class
        if c.context_shape is not None:
            self.context_embedding = nn.Embedding(c.context_codebook_size, c.context_channels)
            self.context_net = nn.Sequential(
                nn.Conv2d(c.context_channels, c.context_channels, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(c.context_channels, c.context_channels, 3, padding=1),
            )
        class_channels = c.hidden_channels if c.num_classes else 0
        context_channels = c.context_channels if c.context_shape is not None else 0
        self.layers = nn.ModuleList(
            GatedLayer(c.hidden_channels, c.kernel_size, i > 0, class_channels, context_channels) for i in range(c.num_layers)
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(c.hidden_channels, c.output_channels, 1),
            nn.ReLU(),
            nn.Conv2d(c.output_channels, c.codebook_size, 1),
        )
        self.post_init()

    def _init_weights(self, module):
        pass  # PyTorch's default initialisation (transformers' N(0, 0.02) starves these ReLU/gated nets)

    def _conditioning(self, condition, context, rows: int):
        """Per layer, the (vertical, horizontal) terms added before the gates, on the first `rows` rows."""
        class_embedding = self.class_embedding(condition) if condition is not None else None  # (B, C)
        context_features = None
        if context is not None:
            embedded = self.context_embedding(context).permute(0, 3, 1, 2)  # (B, Cc, *context_shape)
            upsampled = upsample_context(embedded, self.config.code_shape)  # (B, Cc, h, w)
            context_features = self.context_net(upsampled)[:, :, :rows]  # (B, Cc, rows, w)
        return [layer.conditioning(class_embedding, context_features) for layer in self.layers]

    def _logits(self, codes, condition, context):
        """codes (B, h', w), h' <= h -> logits (B, h', w, K)."""
        x = self.code_embedding(codes).permute(0, 3, 1, 2)  # (B, C, h', w)
        vertical, horizontal = x, F.pad(x, (1, 0))[..., :-1]  # mask A: the horizontal stack starts one code left
        skips = 0
        for layer, (vertical_cond, horizontal_cond) in zip(self.layers, self._conditioning(condition, context, codes.shape[1])):
            vertical, horizontal, skip = layer(vertical, horizontal, vertical_cond, horizontal_cond)
            skips = skips + skip
        return self.head(skips).permute(0, 2, 3, 1)  # (B, h', w, K)

    # -- fast generation (Ramachandran et al. 2017) -----------------------------------------------
    def _init_cache(self, batch_size, condition, context):
        c = self.config
        (h, w), p, channels = c.code_shape, c.kernel_size // 2, c.hidden_channels
        reference = self.code_embedding.weight
        full = (batch_size, 2 * channels, h, w)
        zeros = reference.new_zeros(1, 2 * channels, 1, 1)
        conditioning = [
            [(term if torch.is_tensor(term) else zeros).expand(full) for term in terms]
            for terms in self._conditioning(condition, context, h)
        ]
        from_above_first_row = [layer.vertical_to_horizontal(reference.new_zeros(batch_size, 2 * channels, 1, w)) for layer in self.layers]
        return PixelCNNCache(
            vertical_conditioning=[vertical for vertical, _ in conditioning],
            horizontal_conditioning=[horizontal for _, horizontal in conditioning],
            vertical_rows=[reference.new_zeros(batch_size, channels, p + 1, w + 2 * p) for _ in self.layers],
            from_above=from_above_first_row,  # row 0 has nothing above: W_vh of the zero padding
            horizontal_pixels=[reference.new_zeros(batch_size, channels, 1, p + 1) for _ in self.layers],
        )

    def _start_row(self, cache: PixelCNNCache, codes, row: int):
        """Row `row` begins: run the vertical stack over row-1 (now complete), reset the pixel caches."""
        p = self.config.kernel_size // 2
        cache.horizontal_pixels = [torch.zeros_like(window) for window in cache.horizontal_pixels]
        if row == 0:
            return
        vertical = self.code_embedding(codes[:, row - 1]).permute(0, 2, 1).unsqueeze(2)  # (B, C, 1, w)
        for i, layer in enumerate(self.layers):
            rows = torch.cat([cache.vertical_rows[i][:, :, 1:], F.pad(vertical, (p, p))], dim=2)  # (B, C, p+1, w+2p)
            cache.vertical_rows[i] = rows
            vertical_pre = layer.vertical_conv(rows) + cache.vertical_conditioning[i][:, :, row - 1 : row]  # (B, 2C, 1, w)
            cache.from_above[i] = layer.vertical_to_horizontal(vertical_pre)
            vertical = gated_activation(vertical_pre)  # (B, C, 1, w)

    def _cached_logits(self, cache: PixelCNNCache, codes, index):
        if index != cache.next_index:
            raise RuntimeError(f"the PixelCNN cache is at position {cache.next_index}, asked for position {index}.")
        row, col = divmod(index, self.config.code_shape[1])
        # mask A: the code left of (row, col) enters the horizontal stack; zero padding at column 0
        if col == 0:
            self._start_row(cache, codes, row)
            horizontal = cache.horizontal_pixels[0].new_zeros(codes.shape[0], self.config.hidden_channels, 1, 1)
        else:
            horizontal = self.code_embedding(codes[:, row, col - 1])[:, :, None, None]  # (B, C, 1, 1)
        skips = 0
        for i, layer in enumerate(self.layers):
            window = torch.cat([cache.horizontal_pixels[i][..., 1:], horizontal], dim=-1)  # (B, C, 1, p+1)
            cache.horizontal_pixels[i] = window
            horizontal_pre = (
                layer.horizontal_conv(window)
                + cache.from_above[i][..., col : col + 1]
                + cache.horizontal_conditioning[i][:, :, row : row + 1, col : col + 1]
            )  # (B, 2C, 1, 1)
            horizontal, skip = layer.horizontal_outputs(horizontal_pre, horizontal)
            skips = skips + skip
        cache.next_index += 1
        return self.head(skips)[:, :, 0, 0]  # (B, K)
