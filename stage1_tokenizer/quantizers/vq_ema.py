"""VQ with an exponential-moving-average codebook (van den Oord et al. 2017, appendix A.1).

For each codeword i, with n_i the number of vectors assigned to it in the batch (summed over
processes) and s_i the sum of those vectors:

    N_i <- decay * N_i + (1 - decay) * n_i
    m_i <- decay * m_i + (1 - decay) * s_i
    N_i <- (N_i + eps) / (n + K * eps) * n,   n = sum_i N_i       (Laplace smoothing)
    e_i <- m_i / N_i

The update runs only in training mode. The codebook gets no gradient; the loss is the commitment
term alone, beta * ||z - sg[e]||^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import BaseQuantizer, all_reduce_sum
from .vq import nearest_codes


class EMAVectorQuantizer(BaseQuantizer):
    def __init__(
        self, codebook_size: int, dim: int, *, decay: float = 0.99, eps: float = 1e-5, beta: float = 0.25, **health
    ):
        super().__init__(codebook_size, dim, **health)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1), got {decay}; 0.99 is the paper's value.")
        if not eps > 0:
            raise ValueError(f"eps (Laplace smoothing) must be > 0, got {eps}.")
        if not beta >= 0:  # NaN fails too
            raise ValueError(f"beta (commitment weight) must be >= 0, got {beta}.")
        self.decay, self.eps, self.beta = decay, eps, beta
        codebook = torch.randn(codebook_size, dim)
        self.register_buffer("codebook", codebook)
        # EMA state: one pseudo-count per codeword, so that e_i = m_i / N_i holds from step 0.
        self.register_buffer("ema_count", torch.ones(codebook_size))
        self.register_buffer("ema_sum", codebook.clone())

    @torch.no_grad()
    def _set_codewords(self, index, vectors):
        vectors = vectors.to(self.codebook.dtype)
        self.codebook[index] = vectors
        self.ema_count[index] = 1.0
        self.ema_sum[index] = vectors

    def _quantize(self, flat):
        codes = nearest_codes(flat, self.codebook)  # (N,)
        chosen = self.codebook[codes].to(flat.dtype)  # (N, D)
        if self.training:
            self._ema_update(flat.detach(), codes)
        loss = self.beta * F.mse_loss(flat, chosen)
        quantized = flat + (chosen - flat).detach()
        return quantized, codes, loss

    @torch.no_grad()
    def _ema_update(self, flat, codes):
        # One buffer for counts and sums: a single all-reduce per step across processes.
        stats = torch.zeros(self.codebook_size, self.dim + 1, device=flat.device, dtype=torch.float32)
        stats[:, : self.dim].index_add_(0, codes, flat.float())
        stats[:, self.dim] = torch.bincount(codes, minlength=self.codebook_size).float()
        all_reduce_sum(stats)
        self.ema_sum.lerp_(stats[:, : self.dim], 1 - self.decay)
        self.ema_count.lerp_(stats[:, self.dim], 1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (total + self.codebook_size * self.eps) * total
        self.codebook.copy_(self.ema_sum / smoothed[:, None])
