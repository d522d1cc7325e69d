"""The gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders") over a 2-D grid of ids, with the fast generation caches of Ramachandran et al. 2017
("Fast Generation for Convolutional Autoregressive Models").

Written once here and used by both stages: stage two's `PixelCNNPrior` (the prior of the VQ-VAE
and of each level of VQ-VAE-2; y = a class embedding, s = features of the upper level's codes) and
stage one's latent VQ-VAE decoder (`modeling_latent_vqvae`; s = features of the quantized code
vectors, continuous, so the loss reaches the encoder through the straight-through quantizer).

Notation: k = kernel_size (odd), p = k // 2, C = hidden_channels, ids (B, h, w) in raster order,
x = embed(ids) (B, C, h, w). Two stacks remove the blind spot of masked convolutions (section 2.2):

    vertical stack:   a (p+1) x k convolution over rows r-p .. r, columns c-p .. c+p (zero padding
                      on top and at the sides only): v at row r sees rows <= r, every column in reach.
    horizontal stack: a 1 x (p+1) convolution over columns c-p .. c of the same row. Layer 1 reads x
                      shifted right by one column ("mask A": the current id is excluded), later
                      layers read the stack's own outputs ("mask B": the current position included).

The vertical stack enters the horizontal one shifted down by one row, so the output at (r, c) sees
rows < r through the vertical stack and (r, < c) through the horizontal one: the whole past within
reach and nothing else. Layer l (equation 4 and figure 2), with y a global conditioning vector
(B, G) and s local conditioning features (B, L, h, w) at the grid's resolution:

    a_v = W_v * v_l + A_v y + S_v s                                    # (B, 2C, h, w)
    v_{l+1} = tanh(a_v[:C]) * sigmoid(a_v[C:])
    a_h = W_h * h_l + W_vh shift_down(a_v) + A_h y + S_h s             # W_vh: 1x1, 2C -> 2C
    g = tanh(a_h[:C]) * sigmoid(a_h[C:])
    h_{l+1} = W_res g (+ h_l from layer 2 on);   skips += W_skip g      # W_res, W_skip: 1x1
    logits = W_2 relu(W_1 relu(skips))                                 # (B, K, h, w)

A_v, A_h are linear maps and S_v, S_h 1x1 convolutions (section 2.3's location-dependent
conditioning). The conditioning is known in full before decoding, so s may be seen anywhere: it
may come from a non-causal network (the prior's context net, the latent decoder's upsampling).

Reach of L layers at (r, c): rows r-1 .. r-1-L*p above (columns up to c+L*p to the right), and
columns c-1-L*p .. c-1 of the current row. 15 layers of k=5 reach 31 rows up, 30 columns right and
31 left: a 32x32 grid nearly in full (at column 0, not the last column above).

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

from .sampling import sample_autoregressive
from .wavenet import gated_activation


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
    shape: tuple[int, int]  # (h, w), the grid being generated
    vertical_conditioning: list[torch.Tensor]  # layer l: (B, 2C, h, w) (expanded views)
    horizontal_conditioning: list[torch.Tensor]  # layer l: (B, 2C, h, w)
    vertical_rows: list[torch.Tensor]  # layer l: (B, C, p+1, w+2p), v_l on the last p+1 completed rows, padded
    from_above: list[torch.Tensor]  # layer l: (B, 2C, 1, w), W_vh a_v_l of the row above the current one
    horizontal_pixels: list[torch.Tensor]  # layer l: (B, C, 1, p+1), h_l at the last p+1 columns of the row
    next_index: int = 0  # the flat (raster) position the next `step` computes


class GatedPixelCNN(nn.Module):
    """`num_layers` gated layers (vertical + horizontal stacks) and the output head.

    forward(ids, condition=None, context=None) -> logits (B, h, w, num_outputs)
        ids: (B, h, w) in [0, num_inputs), embedded by the network;
        condition: global conditioning (B, condition_channels), or None;
        context: local conditioning features (B, context_channels, h', w) with h' >= h: only the
            first h rows are used, so a grid generated row by row may pass the whole grid's features.
    The logits at (r, c) depend on the ids before (r, c) in raster order only.

    Cached generation: `init_cache(batch_size, (h, w), condition, context)`, then `step(cache,
    ids)` once per position in raster order; `generate` samples a grid with either path.
    """

    def __init__(
        self,
        num_inputs: int,
        num_outputs: int,
        hidden_channels: int = 128,
        num_layers: int = 15,
        kernel_size: int = 5,
        output_channels: int = 512,
        condition_channels: int = 0,
        context_channels: int = 0,
    ):
        super().__init__()
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 3 (a centred k-wide row above each position), got {kernel_size}.")
        if min(num_inputs, num_outputs, hidden_channels, num_layers, output_channels) < 1 or min(condition_channels, context_channels) < 0:
            raise ValueError(
                f"GatedPixelCNN needs positive sizes, got num_inputs={num_inputs}, num_outputs={num_outputs}, hidden_channels={hidden_channels}, "
                f"num_layers={num_layers}, output_channels={output_channels}, condition_channels={condition_channels}, "
                f"context_channels={context_channels}."
            )
        self.hidden_channels, self.kernel_size = hidden_channels, kernel_size
        self.num_outputs = num_outputs
        self.code_embedding = nn.Embedding(num_inputs, hidden_channels)
        self.layers = nn.ModuleList(
            GatedLayer(hidden_channels, kernel_size, i > 0, condition_channels, context_channels) for i in range(num_layers)
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(hidden_channels, output_channels, 1),
            nn.ReLU(),
            nn.Conv2d(output_channels, num_outputs, 1),
        )

    def conditioning(self, condition, context, rows: int):
        """Per layer, the (vertical, horizontal) terms added before the gates, on the first `rows` rows."""
        first = self.layers[0]
        if condition is not None and first.class_projection is None:
            raise ValueError("this GatedPixelCNN takes no global conditioning (condition_channels=0): pass condition=None.")
        if context is not None:
            if first.context_projection is None:
                raise ValueError("this GatedPixelCNN takes no local conditioning (context_channels=0): pass context=None.")
            if context.shape[-2] < rows:
                raise ValueError(f"context features cover {context.shape[-2]} rows, fewer than the grid's {rows}.")
            context = context[:, :, :rows]
        return [layer.conditioning(condition, context) for layer in self.layers]

    def forward(self, ids: torch.Tensor, condition: torch.Tensor | None = None, context: torch.Tensor | None = None):
        """ids (B, h, w) -> logits (B, h, w, num_outputs)."""
        x = self.code_embedding(ids).permute(0, 3, 1, 2)  # (B, C, h, w)
        if context is not None and context.shape[-1] != x.shape[-1]:
            raise ValueError(f"context features are {context.shape[-1]} wide, the grid {x.shape[-1]}.")
        vertical, horizontal = x, F.pad(x, (1, 0))[..., :-1]  # mask A: the horizontal stack starts one position left
        skips = 0
        for layer, (vertical_cond, horizontal_cond) in zip(self.layers, self.conditioning(condition, context, x.shape[2])):
            vertical, horizontal, skip = layer(vertical, horizontal, vertical_cond, horizontal_cond)
            skips = skips + skip
        return self.head(skips).permute(0, 2, 3, 1)  # (B, h, w, num_outputs)

    # -- fast generation (Ramachandran et al. 2017) -----------------------------------------------
    def init_cache(self, batch_size: int, shape, condition=None, context=None) -> PixelCNNCache:
        """Empty caches for a (h, w) = shape grid; condition (B, G) and context (B, L, h, w) as forward's."""
        (h, w), p, channels = tuple(shape), self.kernel_size // 2, self.hidden_channels
        if context is not None and context.shape[-1] != w:
            raise ValueError(f"context features are {context.shape[-1]} wide, the grid {w}.")
        reference = self.layers[0].vertical_conv.weight
        full = (batch_size, 2 * channels, h, w)
        zeros = reference.new_zeros(1, 2 * channels, 1, 1)
        conditioning = [
            [(term if torch.is_tensor(term) else zeros).expand(full) for term in terms]
            for terms in self.conditioning(condition, context, h)
        ]
        from_above_first_row = [layer.vertical_to_horizontal(reference.new_zeros(batch_size, 2 * channels, 1, w)) for layer in self.layers]
        return PixelCNNCache(
            shape=(h, w),
            vertical_conditioning=[vertical for vertical, _ in conditioning],
            horizontal_conditioning=[horizontal for _, horizontal in conditioning],
            vertical_rows=[reference.new_zeros(batch_size, channels, p + 1, w + 2 * p) for _ in self.layers],
            from_above=from_above_first_row,  # row 0 has nothing above: W_vh of the zero padding
            horizontal_pixels=[reference.new_zeros(batch_size, channels, 1, p + 1) for _ in self.layers],
        )

    def _start_row(self, cache: PixelCNNCache, ids, row: int):
        """Row `row` begins: run the vertical stack over row-1 (now complete), reset the pixel caches."""
        p = self.kernel_size // 2
        cache.horizontal_pixels = [torch.zeros_like(window) for window in cache.horizontal_pixels]
        if row == 0:
            return
        vertical = self.code_embedding(ids[:, row - 1]).permute(0, 2, 1).unsqueeze(2)  # (B, C, 1, w)
        for i, layer in enumerate(self.layers):
            rows = torch.cat([cache.vertical_rows[i][:, :, 1:], F.pad(vertical, (p, p))], dim=2)  # (B, C, p+1, w+2p)
            cache.vertical_rows[i] = rows
            vertical_pre = layer.vertical_conv(rows) + cache.vertical_conditioning[i][:, :, row - 1 : row]  # (B, 2C, 1, w)
            cache.from_above[i] = layer.vertical_to_horizontal(vertical_pre)
            vertical = gated_activation(vertical_pre)  # (B, C, 1, w)

    def step(self, cache: PixelCNNCache, ids: torch.Tensor) -> torch.Tensor:
        """The logits (B, num_outputs) at position cache.next_index (raster order), which then
        advances. ids: the grid (B, h, w), filled before that
        position (only the row above, when a row starts, and the left neighbour are read)."""
        row, col = divmod(cache.next_index, cache.shape[1])
        # mask A: the input left of (row, col) enters the horizontal stack; zero padding at column 0
        if col == 0:
            self._start_row(cache, ids, row)
            horizontal = cache.horizontal_pixels[0].new_zeros(ids.shape[0], self.hidden_channels, 1, 1)
        else:
            horizontal = self.code_embedding(ids[:, row, col - 1])[:, :, None, None]  # (B, C, 1, 1)
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
        return self.head(skips)[:, :, 0, 0]  # (B, num_outputs)

    @torch.no_grad()
    def generate(
        self,
        context: torch.Tensor | None = None,
        condition: torch.Tensor | None = None,
        *,
        shape=None,
        batch_size: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        progress: bool = False,
    ) -> torch.Tensor:
        """Samples ids (B, h, w) one position at a time in raster order, each fed back as the next
        input. shape defaults to the context's grid and batch_size to the conditioning's batch.
        use_cache=True steps through the caches, False runs the network over the rows so far at
        every step (the slow reference): both give the same ids for the same generator."""
        known = context if context is not None else condition
        batch_size = batch_size if batch_size is not None else (known.shape[0] if known is not None else None)
        shape = tuple(shape) if shape is not None else (tuple(context.shape[-2:]) if context is not None else None)
        if batch_size is None or shape is None or len(shape) != 2:
            raise ValueError("generate needs the grid: pass context features (B, L, h, w), or shape=(h, w) and batch_size.")
        h, w = shape

        def full_logits(tokens, index):
            row, col = divmod(index, w)
            return self(tokens.view(batch_size, h, w)[:, : row + 1], condition, context)[:, row, col]

        def start_cache():
            cache = self.init_cache(batch_size, shape, condition, context)
            return lambda tokens, index: self.step(cache, tokens.view(batch_size, h, w))

        tokens = sample_autoregressive(
            batch_size, h * w, self.num_outputs, full_logits=full_logits, start_cache=start_cache, use_cache=use_cache,
            temperature=temperature, top_k=top_k, generator=generator, device=self.code_embedding.weight.device,
            progress=progress, desc="decode",
        )  # fmt: skip
        return tokens.view(batch_size, h, w)
