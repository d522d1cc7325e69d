"""SCQ: soft convex quantization (Gautam et al. 2023, arXiv 2310.03004), scalable relaxation.

The output is a convex combination of codewords, C P, close to z. With C the codebook as a D x K
matrix and P_vq the one-hot nearest-codeword assignment (no gradient):

    P   = argmin_P ||Z - C P||^2 + lam ||P - P_vq||^2 = (C^T C + lam I_K)^-1 (C^T Z + lam P_vq)
        = P_vq + C^T (C C^T + lam I_D)^-1 (Z - C P_vq)          (push-through identity)
    W   = Proj_simplex(P)       per column: max(P - tau, 0) with the weights summing to one
    out = C W,   codes = argmax W,   loss = ||sg[z] - e_vq||^2 + beta ||z - sg[e_vq]||^2 (VQ terms)

Why this is fast (../shared/QUANTIZERS.md): the second form factors a D x D matrix instead of
K x K, and Z - C P_vq is the VQ residual, so P costs one N x D by D x K matmul. The projection's
support is small, so only each row's `support_size` largest entries are kept (the projection is
exact whenever the support fits, which is checked: rows whose support might not fit are projected
over all K entries). The selected entries and the output are then recomputed with autograd from
`support_size` gathered codewords, so the backward pass costs O(N * support_size * D), and it
equals the sparsemax Jacobian of the projection: g_in = s * (g - mean of g over the support).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import BaseQuantizer
from .vq import nearest_codes, row_blocks


def project_to_simplex(values: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row (last dim) onto the probability simplex (Duchi et al. 2008).

    The support is chosen without gradient (a sort); the threshold tau is then computed from
    `values` itself, so autograd gives the projection's exact Jacobian (the sparsemax one).
    """
    with torch.no_grad():
        sorted_values, order = values.sort(dim=-1, descending=True)
        ranks = torch.arange(1, values.shape[-1] + 1, device=values.device, dtype=values.dtype)
        in_sorted_support = sorted_values - (sorted_values.cumsum(-1) - 1) / ranks > 0  # a prefix
        in_support = torch.zeros_like(in_sorted_support).scatter_(-1, order, in_sorted_support)
    support_size = in_support.sum(-1, keepdim=True)  # rho >= 1
    threshold = ((values * in_support).sum(-1, keepdim=True) - 1) / support_size  # tau
    return (values - threshold).clamp(min=0) * in_support


class SoftConvexQuantizer(BaseQuantizer):
    def __init__(
        self,
        codebook_size: int,
        dim: int,
        *,
        lam: float = 1.0,
        beta: float = 0.25,
        support_size: int = 8,
        **health,
    ):
        super().__init__(codebook_size, dim, **health)
        if not lam > 0:
            raise ValueError(f"lam (weight of ||P - P_vq||^2) must be > 0, got {lam}; larger is closer to VQ.")
        if beta < 0:
            raise ValueError(f"beta (commitment weight) must be >= 0, got {beta}.")
        if support_size < 2:
            raise ValueError(f"support_size must be >= 2, got {support_size}.")
        self.lam, self.beta, self.support_size = lam, beta, min(support_size, codebook_size)
        self.codebook = nn.Parameter(torch.randn(codebook_size, dim))

    def _quantize(self, flat):
        codebook = self.codebook.to(flat.dtype)  # (K, D)
        vq_codes = nearest_codes(flat, codebook)  # (N,)
        vq_chosen = codebook.index_select(0, vq_codes)  # (N, D)
        gram = codebook.t() @ codebook + self.lam * torch.eye(self.dim, device=flat.device, dtype=flat.dtype)
        gram_inverse = torch.cholesky_inverse(torch.linalg.cholesky(gram))  # (C C^T + lam I_D)^-1
        # Row per vector: P = P_vq + y C^T with y = (z - e_vq) G^-1.
        y = (flat - vq_chosen) @ gram_inverse  # (N, D)

        # Solve with the k largest entries of P per row; rows whose support might not fit in k
        # (the k-th entry got weight) are solved again with a larger k, the last round with all K.
        rounds = dict.fromkeys(min(k, self.codebook_size) for k in (self.support_size, 4 * self.support_size, self.codebook_size))
        rows = None  # None: every row (no gather, so no scatter in the backward pass)
        for k in rounds:
            if rows is None:
                fits, out, round_codes = self._solve(flat, y, vq_codes, codebook, k)
                quantized, codes = out, round_codes
            else:
                fits, out, round_codes = self._solve(
                    flat.index_select(0, rows), y.index_select(0, rows), vq_codes[rows], codebook, k
                )
                done = rows[fits]
                quantized = quantized.index_copy(0, done, out[fits])
                codes = codes.index_copy(0, done, round_codes[fits])
            rows = (~fits).nonzero().squeeze(1) if rows is None else rows[~fits]
            if rows.numel() == 0:
                break

        loss = F.mse_loss(vq_chosen, flat.detach()) + self.beta * F.mse_loss(flat, vq_chosen.detach())
        return quantized, codes, loss

    def _solve(self, flat, y, vq_codes, codebook, k):
        """Projection over the k largest entries of P per row, then the line search towards e_vq.

        Returns (fits, out, codes) for every row; `out` and `codes` are exact where `fits`.
        """
        index = self._largest_entries(y, codebook, vq_codes, k)  # (n, k)
        # index_select + elementwise products: far faster on CPU than fancy indexing and a batched
        # matmul of N tiny (1 x D) @ (D x k) products, in both passes.
        gathered = codebook.index_select(0, index.reshape(-1)).view(*index.shape, -1)  # (n, k, D)
        is_vq = index == vq_codes[:, None]
        values = (y[:, None, :] * gathered).sum(-1) + is_vq.to(y.dtype)  # entries of P, (n, k)
        weights = project_to_simplex(values)  # (n, k)
        fits = (weights[:, -1] == 0) | (k == codebook.shape[0])
        convex = (weights[:, :, None] * gathered).sum(1)  # C W, (n, D)

        # Our addition (docs/quantizers.md): an exact line search between the VQ codeword and C W
        # stays in the hull and guarantees ||z - out|| <= ||z - e_vq||, which projecting the
        # relaxed solution alone does not.
        start = codebook.index_select(0, vq_codes)
        direction = convex - start
        step = ((flat - start) * direction).sum(1, keepdim=True)
        step = (step / (direction * direction).sum(1, keepdim=True).clamp(min=1e-12)).clamp(0.0, 1.0)  # (n, 1)
        out = start + step * direction

        with torch.no_grad():  # codes: argmax of the final weights  step * W + (1 - step) * P_vq
            final = step * weights + (1 - step) * is_vq
            best, position = final.max(1)
            codes = index.gather(1, position[:, None]).squeeze(1)
            vq_outside = ~is_vq.any(1) & ((1 - step.squeeze(1)) > best)
            codes = torch.where(vq_outside, vq_codes, codes)
        return fits, out, codes

    @staticmethod
    @torch.no_grad()
    def _largest_entries(y, codebook, vq_codes, k):
        """Indices of the k largest entries of each row of P = P_vq + y C^T, scanned in blocks."""
        index = torch.empty(y.shape[0], k, dtype=torch.long, device=y.device)
        for block in row_blocks(y.shape[0], codebook.shape[0]):
            dense = y[block] @ codebook.t()  # (n, K)
            dense.scatter_add_(1, vq_codes[block, None], torch.ones_like(dense[:, :1]))
            index[block] = dense.topk(k, dim=1).indices
        return index
