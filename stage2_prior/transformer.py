"""Decoder-only transformer prior over flattened codes (a GPT, Radford et al. 2019, as in nanoGPT),
with a KV cache for sampling and optional classifier-free guidance (Ho & Salimans 2022).

    h_0 = prefix(condition)                 # a learned token per class, plus the null class
    h_i = embed(code_{i-1}) + pos_i (+ context_i) for i = 1 .. T-1
    pre-LN blocks: h += Attn(LN(h)) with causal scaled-dot-product attention; h += MLP(LN(h))
    p(code_i | code_<i, condition, context) = softmax(W LN(h_i))

Position i predicts code i from the prefix and codes 0 .. i-1. `context_i`: the upper level's
codes, embedded and upsampled onto the grid (nearest), so each position sees the upper code
above it; the context is known in full, so it may be added anywhere. Condition dropout while
training (config.condition_dropout) teaches the null-class prefix, which `generate`'s
`guidance_scale` uses.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn

from .prior import AutoregressivePrior, PriorConfig, upsample_context


@strict
class TransformerConfig(PriorConfig):
    r"""The transformer prior's configuration (and `PriorConfig`'s fields)."""

    model_type = "vqgen-transformer-prior"

    hidden_size: int = field(default=256, metadata={"help": "Width of the residual stream."})
    num_layers: int = field(default=8, metadata={"help": "Transformer blocks."})
    num_heads: int = field(default=8, metadata={"help": "Attention heads; hidden_size must be divisible by it."})
    mlp_ratio: int = field(default=4, metadata={"help": "MLP hidden width / hidden_size."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout on attention weights and residual branches while training."})

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if min(self.hidden_size, self.num_layers, self.num_heads, self.mlp_ratio) < 1:
            raise ValueError(
                f"TransformerConfig needs positive sizes, got hidden_size={self.hidden_size}, num_layers={self.num_layers}, "
                f"num_heads={self.num_heads}, mlp_ratio={self.mlp_ratio}."
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}.")


@dataclass
class KVCache:
    keys: list[torch.Tensor]  # per layer (B, heads, T, head_dim), filled up to the current step
    values: list[torch.Tensor]
    extra: torch.Tensor  # (B, T, hidden): position (+ context) embeddings
    prefix: torch.Tensor  # (B, hidden)


class Block(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        d = config.hidden_size
        self.num_heads, self.dropout = config.num_heads, config.dropout
        self.attention_norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.attention_output = nn.Linear(d, d)
        self.mlp_norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, config.mlp_ratio * d), nn.GELU(), nn.Linear(config.mlp_ratio * d, d))
        self.residual_dropout = nn.Dropout(config.dropout)

    def _heads(self, x):  # (B, T, 3d) -> 3 x (B, heads, T, head_dim)
        batch, length, _ = x.shape
        return x.view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)

    def forward(self, x, cache: KVCache | None = None, layer: int = 0, index: int = 0):
        """x (B, T, d); with a cache, x is the one position `index` (B, 1, d)."""
        q, k, v = self._heads(self.qkv(self.attention_norm(x)))
        if cache is None:
            attended = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        else:  # append this position's key and value, attend over all positions so far
            cache.keys[layer][:, :, index] = k[:, :, 0]
            cache.values[layer][:, :, index] = v[:, :, 0]
            attended = F.scaled_dot_product_attention(q, cache.keys[layer][:, :, : index + 1], cache.values[layer][:, :, : index + 1])
        attended = attended.transpose(1, 2).reshape(x.shape)  # (B, T, d)
        x = x + self.residual_dropout(self.attention_output(attended))
        return x + self.residual_dropout(self.mlp(self.mlp_norm(x)))


class TransformerPrior(AutoregressivePrior):
    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig):
        super().__init__(config)
        c = config
        d = c.hidden_size
        self.code_embedding = nn.Embedding(c.codebook_size, d)
        self.position_embedding = nn.Parameter(torch.zeros(c.sequence_length, d))
        self.prefix_embedding = nn.Embedding(c.num_classes + 1, d)  # row num_classes: "no condition"
        if c.context_shape is not None:
            self.context_embedding = nn.Embedding(c.context_codebook_size, d)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.num_layers))
        self.final_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, c.codebook_size, bias=False)
        self.post_init()

    def _init_weights(self, module):  # GPT-2's initialisation
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, TransformerPrior):
            nn.init.normal_(module.position_embedding, std=0.02)

    def _prefix(self, condition, batch: int):
        ids = condition if condition is not None else torch.full((batch,), self.config.num_classes, device=self.device)
        return self.prefix_embedding(ids)  # (B, d)

    def _position_terms(self, context, length: int):
        """Position embeddings plus the upsampled context: (1 or B, length, d)."""
        extra = self.position_embedding[:length].unsqueeze(0)
        if context is not None:
            embedded = self.context_embedding(context).movedim(-1, 1)  # (B, d, *context_shape)
            extra = extra + upsample_context(embedded, self.config.code_shape).flatten(2).transpose(1, 2)[:, :length]
        return extra

    def _logits(self, codes, condition, context):
        batch = codes.shape[0]
        flat = codes.reshape(batch, -1)  # (B, T)
        tokens = torch.cat([self._prefix(condition, batch).unsqueeze(1), self.code_embedding(flat[:, :-1])], dim=1)
        x = tokens + self._position_terms(context, flat.shape[1])  # (B, T, d)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x)).reshape(*codes.shape, -1)

    def _init_cache(self, batch_size, condition, context):
        c = self.config
        shape = (batch_size, c.num_heads, c.sequence_length, c.hidden_size // c.num_heads)
        reference = self.position_embedding
        return KVCache(
            keys=[reference.new_zeros(shape) for _ in self.blocks],
            values=[reference.new_zeros(shape) for _ in self.blocks],
            extra=self._position_terms(context, c.sequence_length).expand(batch_size, -1, -1),
            prefix=self._prefix(condition, batch_size),
        )

    def _cached_logits(self, cache: KVCache, codes, index):
        token = cache.prefix if index == 0 else self.code_embedding(codes.reshape(codes.shape[0], -1)[:, index - 1])
        x = (token + cache.extra[:, index]).unsqueeze(1)  # (B, 1, d)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer, index)
        return self.head(self.final_norm(x[:, 0]))  # (B, K)
