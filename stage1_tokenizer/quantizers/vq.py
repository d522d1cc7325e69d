"""Classic VQ (van den Oord et al. 2017, "Neural Discrete Representation Learning", eq. 3).

    codes     = argmin_k ||z - e_k||^2
    quantized = z + sg[e_codes - z]          (straight-through: forward e_codes, gradient to z)
    loss      = ||sg[z] - e||^2 + beta * ||z - sg[e]||^2      (mean over elements)

beta weights the commitment term (the encoder's), not the codebook term, as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import BaseQuantizer

# Rows per block when scanning N x K score matrices: a 2048 x 512 block stays in cache, which
# halves the time of the argmin on CPU compared to one N x K matrix (benchmarks/quantizer_speed.py).
SCAN_BLOCK_ELEMENTS = 2**20


def row_blocks(num_rows: int, codebook_size: int):
    step = max(1, SCAN_BLOCK_ELEMENTS // codebook_size)
    return (slice(start, start + step) for start in range(0, num_rows, step))


def nearest_codes(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codeword in squared Euclidean distance, for each row of `flat`.

    ||z||^2 is the same for every codeword, so argmin_k ||e_k||^2 - 2 z.e_k needs one matmul.
    """
    with torch.no_grad():
        codebook = codebook.to(flat.dtype)
        norms, transposed = (codebook * codebook).sum(1), codebook.t()
        codes = torch.empty(flat.shape[0], dtype=torch.long, device=flat.device)
        for rows in row_blocks(flat.shape[0], codebook.shape[0]):
            codes[rows] = torch.addmm(norms, flat[rows], transposed, alpha=-2.0).argmin(1)  # (n, K) -> (n,)
        return codes


class VectorQuantizer(BaseQuantizer):
    def __init__(self, codebook_size: int, dim: int, *, beta: float = 0.25, **health):
        super().__init__(codebook_size, dim, **health)
        if not beta >= 0:  # NaN fails too
            raise ValueError(f"beta (commitment weight) must be >= 0, got {beta}.")
        self.beta = beta
        # The paper's uniform init; k-means init (on by default) overwrites it on the first batch.
        self.codebook = nn.Parameter(torch.empty(codebook_size, dim).uniform_(-1 / codebook_size, 1 / codebook_size))

    def _quantize(self, flat):
        codes = nearest_codes(flat, self.codebook)  # (N,)
        chosen = self.codebook[codes].to(flat.dtype)  # (N, D)
        loss = F.mse_loss(chosen, flat.detach()) + self.beta * F.mse_loss(flat, chosen.detach())
        quantized = flat + (chosen - flat).detach()
        return quantized, codes, loss
