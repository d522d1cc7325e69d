"""SCQ: soft convex quantization (Gautam et al. 2023, arXiv 2310.03004), scalable relaxation.

The output is a convex combination of codewords, C P, close to z. With C the codebook as a D x K
matrix and P_vq the one-hot nearest-codeword assignment (no gradient):

    P   = argmin_P ||Z - C P||^2 + lam ||P - P_vq||^2 = (C^T C + lam I_K)^-1 (C^T Z + lam P_vq)
        = P_vq + C^T (C C^T + lam I_D)^-1 (Z - C P_vq)          (push-through identity)
    W   = Proj_simplex(P)       per column: max(P - tau, 0) with the weights summing to one
    t   = clamp(<z - e_vq, C W - e_vq> / ||C W - e_vq||^2, 0, 1)      (our line search)
    out = e_vq + t (C W - e_vq),   codes = argmax of t W + (1 - t) P_vq
    loss = ||sg[z] - e_vq||^2 + beta ||z - sg[e_vq]||^2                 (VQ's terms)

Why this is fast (../shared/QUANTIZERS.md): the second form factors a D x D matrix instead of
K x K, and Z - C P_vq is the VQ residual, so P costs one N x D by D x K matmul. The projection's
support is small, so only each row's `support_size` largest entries are kept (exact whenever the
support fits, which is checked; rows whose support might not fit get more entries, at last all K).
`SparseSimplexCombination` then forms C W and its backward pass with sparse products only,
O(N * support_size * D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import BaseQuantizer
from .vq import nearest_codes, row_blocks


def _rows_as_csr(index: torch.Tensor, values: torch.Tensor, num_columns: int) -> torch.Tensor:
    """(n, k) column indices and values -> a sparse CSR (n, num_columns) matrix, k entries a row."""
    n, k = index.shape
    row_starts = torch.arange(0, n * k + 1, k, device=index.device)
    return torch.sparse_csr_tensor(row_starts, index.reshape(-1), values.reshape(-1), (n, num_columns))


class SparseSimplexCombination(torch.autograd.Function):
    """out[n] = sum_j W[n, j] c[index[n, j]],  W = Proj_simplex(V) row by row, where
    V[n, j] = y[n] . c[index[n, j]] + [index[n, j] is row n's VQ code]   (entries of P).

    `weights` (W, computed without gradient) comes in; the backward pass differentiates through
    the projection (sparsemax Jacobian) and V with sparse products only, O(n k D):
        g_W = (g_out C^T) sampled at the entries,  g_V = s * (g_W - mean of g_W over the support),
        g_y = G_V C,   g_C = W^T g_out + G_V^T y.
    Compared with gathering (n, k, D) codewords and letting autograd run, this is 10x faster here.
    """

    @staticmethod
    def forward(ctx, y, codebook, index, weights):
        ctx.save_for_backward(y, codebook, index, weights)
        return _rows_as_csr(index, weights, codebook.shape[0]) @ codebook  # (n, D)

    @staticmethod
    def backward(ctx, grad_out):
        y, codebook, index, weights = ctx.saved_tensors
        num_codes = codebook.shape[0]
        weight_matrix = _rows_as_csr(index, weights, num_codes)
        grad_weights = torch.sparse.sampled_addmm(weight_matrix, grad_out.contiguous(), codebook.t(), beta=0.0)
        grad_weights = grad_weights.values().view(index.shape)  # (n, k)
        support = (weights > 0).to(weights.dtype)
        mean_on_support = (grad_weights * support).sum(1, keepdim=True) / support.sum(1, keepdim=True)
        grad_values = _rows_as_csr(index, support * (grad_weights - mean_on_support), num_codes)
        grad_y = grad_values @ codebook
        grad_codebook = weight_matrix.t() @ grad_out + grad_values.t() @ y
        return grad_y, grad_codebook, None, None


def project_to_simplex(values: torch.Tensor, presorted: bool = False) -> torch.Tensor:
    """Euclidean projection of each row (last dim) onto the probability simplex (Duchi et al. 2008).

    The support is chosen without gradient (a sort, skipped when `presorted`: rows already in
    descending order); the threshold tau is then computed from `values` itself, so autograd gives
    the projection's exact Jacobian (the sparsemax one).
    """
    with torch.no_grad():
        sorted_values, order = (values, None) if presorted else values.sort(dim=-1, descending=True)
        ranks = torch.arange(1, values.shape[-1] + 1, device=values.device, dtype=values.dtype)
        in_sorted_support = sorted_values - (sorted_values.cumsum(-1) - 1) / ranks > 0  # a prefix
        in_support = (
            in_sorted_support if presorted else torch.zeros_like(in_sorted_support).scatter_(-1, order, in_sorted_support)
        )
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

        # Project each row's k largest entries of P. The projection is exact when the support
        # fits: rows whose k-th entry got weight are solved again with 4k entries, then with all K.
        rows = torch.arange(flat.shape[0], device=flat.device)
        sizes = dict.fromkeys(min(k, self.codebook_size) for k in (self.support_size, 4 * self.support_size, self.codebook_size))
        for round_number, k in enumerate(sizes):
            round_y = y if round_number == 0 else y.index_select(0, rows)
            round_vq = vq_codes[rows]
            index, values = self._largest_entries(round_y.detach(), codebook.detach(), round_vq, k)  # (n, k)
            with torch.no_grad():
                weights = project_to_simplex(values, presorted=True)  # topk returns them sorted
            fits = (weights[:, -1] == 0) | (k == self.codebook_size)
            out = SparseSimplexCombination.apply(round_y, codebook, index, weights)  # C W, (n, D)
            top_code, top_weight = index[:, 0].clone(), weights[:, 0].clone()  # index is saved for backward
            vq_weight = (weights * (index == round_vq[:, None])).sum(1)
            if round_number == 0:
                convex, best_code, best_weight, weight_of_vq = out, top_code, top_weight, vq_weight
            else:
                done, fits_at = rows[fits], fits.nonzero().squeeze(1)
                convex = convex.index_copy(0, done, out.index_select(0, fits_at))
                best_code[done], best_weight[done], weight_of_vq[done] = top_code[fits], top_weight[fits], vq_weight[fits]
            rows = rows[~fits]
            if rows.numel() == 0:
                break

        # Our addition (docs/quantizers.md): an exact line search between the VQ codeword and C W
        # stays in the hull and guarantees ||z - out|| <= ||z - e_vq||, which projecting the
        # relaxed solution alone does not.
        direction = convex - vq_chosen
        step = ((flat - vq_chosen) * direction).sum(1, keepdim=True)
        step = (step / (direction * direction).sum(1, keepdim=True).clamp(min=1e-12)).clamp(0.0, 1.0)  # (N, 1)
        quantized = vq_chosen + step * direction

        # codes: argmax of the final weights  t W + (1 - t) P_vq, which is W's top entry or the VQ code
        with torch.no_grad():
            t = step.squeeze(1)
            codes = torch.where(t * best_weight > t * weight_of_vq + (1 - t), best_code, vq_codes)

        loss = F.mse_loss(vq_chosen, flat.detach()) + self.beta * F.mse_loss(flat, vq_chosen.detach())
        return quantized, codes, loss

    @staticmethod
    @torch.no_grad()
    def _largest_entries(y, codebook, vq_codes, k):
        """The k largest entries of each row of P = P_vq + y C^T (indices, values), in blocks."""
        index = torch.empty(y.shape[0], k, dtype=torch.long, device=y.device)
        values = torch.empty(y.shape[0], k, dtype=y.dtype, device=y.device)
        for block in row_blocks(y.shape[0], codebook.shape[0]):
            dense = y[block] @ codebook.t()  # (n, K)
            dense.scatter_add_(1, vq_codes[block, None], torch.ones_like(dense[:, :1]))
            values[block], index[block] = dense.topk(k, dim=1)
        return index, values
