"""SCQ: soft convex quantization (Gautam et al. 2023, arXiv 2310.03004), scalable relaxation.

The output is a convex combination of codewords close to z. With C the codebook as a D x K
matrix, z an encoder output (a column of Z), P_vq the one-hot nearest-codeword assignment (no
gradient) and e_vq = C P_vq its codeword:

    P   = argmin_P ||Z - C P||^2 + lam ||P - P_vq||^2 = (C^T C + lam I_K)^-1 (C^T Z + lam P_vq)
        = P_vq + C^T (C C^T + lam I_D)^-1 (Z - C P_vq)          (push-through identity)
    W   = Proj_simplex(P)       per column: max(P - tau, 0) with the weights summing to one
  line_search=False, the paper's output:
    out = C W,   codes = argmax of W (= argmax of P: the projection keeps the order)
  line_search=True (ours; the default):
    t   = clamp(<z - e_vq, C W - e_vq> / ||C W - e_vq||^2, 0, 1)
    out = e_vq + t (C W - e_vq),   codes = argmax of t W + (1 - t) P_vq
  every variant:
    loss = ||sg[z] - e_vq||^2 + beta ||z - sg[e_vq]||^2                 (VQ's terms)
    straight_through=True (the default): quantized = out + (z - sg[z]), z gets VQ's identity
      gradient; straight_through=False: quantized = out, z gets the layer's own gradient.
    normalize=True (our reading of public ports): z and the codewords are L2-normalised first.

Why this is fast (docs/quantizers.md): the second form factors a D x D matrix instead of
K x K, and Z - C P_vq is the VQ residual, so P costs one N x D by D x K matmul. The projection's
support is small (about 7 of 512 entries), and only the support is ever stored or multiplied.
Two implementations compute the same layer (tests check that they agree):
- `soft_convex_layer` (here; portable torch ops, any device): `simplex_support` keeps each row's
  largest entries (`topk`; exact whenever the support fits, which is checked; rows whose support
  might not fit get more entries, at last all K) as a CSR matrix, and `SparseSimplexCombination`
  forms C W and its backward pass with sparse products only, O(nnz * D).
- `CpuSoftConvexLayer` (scq_cpu.py; the default on CPU): the same steps per row in numba kernels,
  with no topk and no sort, and the whole backward pass written out by hand.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .base import BaseQuantizer
from .scq_cpu import CpuSoftConvexLayer
from .vq import nearest_codes, row_blocks


def _csr(row_starts: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the products used here are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(row_starts, columns, values, shape, check_invariants=False)


class SparseSimplexCombination(torch.autograd.Function):
    """out[n] = sum_j W[n, j] c_j over row n's support, W = Proj_simplex(V) row by row, where
    V[n, j] = y[n] . c_j + [j is row n's VQ code]   (the entries of P).

    W comes in as a CSR matrix's rows (`row_starts`, `columns`, `weights`: only the support's
    entries, computed without gradient). The backward pass differentiates through the projection
    (sparsemax Jacobian) and V with sparse products only, O(nnz * D):
        g_W = (g_out C^T) sampled at the entries,  g_V = g_W - mean of g_W over the row's support,
        g_y = G_V C,   g_C = W^T g_out + G_V^T y   (through W's transpose, built once).
    """

    @staticmethod
    def forward(ctx, y, codebook, row_starts, columns, weights):
        ctx.save_for_backward(y, codebook, row_starts, columns, weights)
        return _csr(row_starts, columns, weights, (y.shape[0], codebook.shape[0])) @ codebook  # (n, D)

    @staticmethod
    def backward(ctx, grad_out):
        y, codebook, row_starts, columns, weights = ctx.saved_tensors
        num_rows, num_codes = y.shape[0], codebook.shape[0]
        weight_matrix = _csr(row_starts, columns, weights, (num_rows, num_codes))
        grad_weights = torch.sparse.sampled_addmm(weight_matrix, grad_out.contiguous(), codebook.t(), beta=0.0).values()
        lengths = row_starts.diff()
        row_of_entry = torch.repeat_interleave(torch.arange(num_rows, device=y.device), lengths)
        row_sums = torch.zeros(num_rows, dtype=y.dtype, device=y.device).index_add_(0, row_of_entry, grad_weights)
        grad_values = grad_weights - (row_sums / lengths)[row_of_entry]
        grad_y = _csr(row_starts, columns, grad_values, (num_rows, num_codes)) @ codebook
        # W^T and G_V^T share one pattern: sort the entries by codeword once
        order = torch.argsort(columns, stable=True)
        column_starts = torch.zeros(num_codes + 1, dtype=row_starts.dtype, device=y.device)
        column_starts[1:] = torch.bincount(columns, minlength=num_codes).cumsum(0)
        rows_by_column = row_of_entry[order]
        grad_codebook = _csr(column_starts, rows_by_column, weights[order], (num_codes, num_rows)) @ grad_out
        grad_codebook += _csr(column_starts, rows_by_column, grad_values[order], (num_codes, num_rows)) @ y
        return grad_y, grad_codebook, None, None, None


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


class UnitRows(nn.Module):
    """Parametrization for `normalize=True`: `codebook` reads as the stored rows scaled to unit
    length, so the codewords the layer uses are the ones `codebook[codes]` decodes to."""

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return F.normalize(stored, dim=-1)


def _is_real(value) -> bool:
    """A real number (bools excluded), which the range checks can compare."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_flag(name: str, value, meaning: str) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}; {meaning}")


class SoftConvexQuantizer(BaseQuantizer):
    """Soft convex quantization; the formulas of each variant are in this module's docstring.

    Variants (the default is ours: it won on the quality benchmark's validation split, README):
    - "scq, ST encoder gradient (ours)": line_search=True, straight_through=True (the defaults).
    - "scq (paper)": line_search=False, straight_through=False: the output is C W, the projected
      relaxed solution, and z gets the gradient through that optimisation layer.
    - "scq (paper), normalised": the paper's layer with normalize=True, as public ports run it;
      sweep lam with it (unit codewords change the scale of C C^T against lam I).

    Options:
    lam: weight of ||P - P_vq||^2, > 0 (larger is closer to VQ; public ports use 0.1 or 1).
    beta: commitment weight, >= 0.
    line_search: True (ours): the output is the point between e_vq and C W nearest to z, never
        farther from z than e_vq. False: the output is C W, as in the paper.
    straight_through: True: the encoder gets VQ's straight-through (identity) gradient; the
        codebook still learns through the layer. This is an estimator of our choosing, not the
        layer's Jacobian: the exact SCQ layer would be the identity only for z inside the
        codebook's convex hull, and at D=64, K=512 fresh Gaussian points practically never are
        (docs/quantizers.md). With the relaxed layer's own gradient (False) the codes collapsed
        in our Fashion-MNIST runs with line_search=True (docs/quantizers.md).
    normalize: L2-normalise z and the codewords before the layer (our reading of public ports;
        the paper does not say). `codebook` then reads as unit rows (a parametrization; the
        stored rows are `parametrizations.codebook.original`), and k-means runs on normalised z.
    cpu_kernels: on CPU, run the layer as numba kernels (scq_cpu.py; the default, faster per step:
        README "Speed") rather than the portable torch ops used on other devices; both compute the same.
    support_size: the portable path's first-round width: entries of P kept per row besides the
        VQ one (more rounds follow only where the support does not fit).
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        *,
        lam: float = 1.0,
        beta: float = 0.25,
        line_search: bool = True,
        straight_through: bool = True,
        normalize: bool = False,
        support_size: int = 8,
        cpu_kernels: bool = True,
        **health,
    ):
        super().__init__(codebook_size, dim, **health)
        # `not (0 < x)` style: NaN fails every comparison, so it is refused too
        if not (_is_real(lam) and 0 < lam < math.inf):
            raise ValueError(
                f"lam (weight of ||P - P_vq||^2) must be > 0, got {lam!r}; pass a finite positive number "
                "(larger is closer to VQ; 1.0 is the default, public ports use 0.1 or 1)."
            )
        if not (_is_real(beta) and 0 <= beta < math.inf):
            raise ValueError(
                f"beta (commitment weight) must be >= 0, got {beta!r}; pass a finite number >= 0 (0.25 as in VQ)."
            )
        if not (isinstance(support_size, int) and not isinstance(support_size, bool) and support_size >= 2):
            raise ValueError(
                f"support_size must be an integer >= 2, got {support_size!r}; it only sets the portable "
                "path's first round (default 8), the result does not depend on it."
            )
        _check_flag("line_search", line_search, "False gives the paper's output C W, True ours (the default).")
        _check_flag(
            "straight_through", straight_through,
            "True gives z VQ's straight-through gradient (the default), False the layer's own.",
        )  # fmt: skip
        _check_flag("normalize", normalize, "True L2-normalises z and the codewords before the layer.")
        _check_flag("cpu_kernels", cpu_kernels, "True runs the layer as numba kernels on CPU (the default).")
        self.lam, self.beta, self.support_size = float(lam), float(beta), min(support_size, codebook_size)
        self.line_search, self.straight_through = line_search, straight_through
        self.normalize, self.cpu_kernels = normalize, cpu_kernels
        self.codebook = nn.Parameter(torch.randn(codebook_size, dim))
        if normalize:
            parametrize.register_parametrization(self, "codebook", UnitRows())

    @torch.no_grad()
    def _set_codewords(self, index, vectors):
        stored = self.parametrizations.codebook.original if self.normalize else self.codebook
        stored.data[index] = vectors.to(stored.dtype)

    @torch.no_grad()
    def _kmeans_init(self, flat):
        # with normalize, cluster directions: raw k-means would spend codewords on magnitudes
        super()._kmeans_init(F.normalize(flat, dim=-1) if self.normalize else flat)

    def _quantize(self, z):
        # The solve, the projection and the sparse products have no half-precision kernels (and
        # need the range): run them in at least float32, outside autocast.
        working = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
        with torch.autocast(z.device.type, enabled=False):
            quantized, codes, loss = self._soft_convex(working)
        return quantized.to(z.dtype), codes, loss

    def _soft_convex(self, z):
        codebook = self.codebook.to(z.dtype)  # (K, D); unit rows when normalize (the parametrization)
        if self.normalize:
            z = F.normalize(z, dim=-1)  # (N, D): the layer's input
        # straight_through: the layer's own gradient reaches the codebook only; z's is the identity
        flat = z.detach() if self.straight_through else z
        vq_codes = nearest_codes(flat, codebook)  # (N,)
        vq_chosen = codebook.index_select(0, vq_codes)  # e_vq, (N, D)
        gram = codebook.t() @ codebook + self.lam * torch.eye(self.dim, device=z.device, dtype=z.dtype)  # (D, D)
        gram_inverse = torch.cholesky_inverse(torch.linalg.cholesky(gram))  # (C C^T + lam I_D)^-1
        layer_inputs = (flat, codebook, vq_codes, vq_chosen, gram_inverse)
        if self.cpu_kernels and flat.device.type == "cpu":  # the same function, in numba kernels
            quantized, codes = CpuSoftConvexLayer.apply(*layer_inputs, self.line_search)
        else:
            quantized, codes = soft_convex_layer(*layer_inputs, self.support_size, self.line_search)
        if self.straight_through:
            quantized = quantized + (z - flat)  # adds zero; the gradient to z is the identity
        loss = F.mse_loss(vq_chosen, z.detach()) + self.beta * F.mse_loss(z, vq_chosen.detach())
        return quantized, codes, loss

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, lam={self.lam}, beta={self.beta}, line_search={self.line_search}, "
            f"straight_through={self.straight_through}, normalize={self.normalize}"
        )


def soft_convex_layer(flat, codebook, vq_codes, vq_chosen, gram_inverse, support_size, line_search=True):
    """(quantized, codes): SCQ's layer in portable torch ops (any device), given the VQ codes,
    their codewords and G^-1 = (C C^T + lam I_D)^-1. `line_search=False`: the output is C W."""
    # Row per vector: P = P_vq + y C^T with y = (z - e_vq) G^-1.
    residual = flat - vq_chosen  # z - e_vq, (N, D)
    y = residual @ gram_inverse  # (N, D)
    row_starts, columns, weights, best_code, best_weight, weight_of_vq = simplex_support(
        y.detach(), codebook.detach(), vq_codes, support_size
    )
    convex = SparseSimplexCombination.apply(y, codebook, row_starts, columns, weights)  # C W, (N, D)
    if not line_search:  # the paper's output; codes: argmax of W, W's top entry or the VQ code on a tie
        codes = torch.where(best_weight > weight_of_vq, best_code, vq_codes)
        return convex, codes

    # Our addition (docs/quantizers.md): an exact line search between the VQ codeword and C W
    # stays in the hull and guarantees ||z - out|| <= ||z - e_vq||, which projecting the
    # relaxed solution alone does not.
    direction = convex - vq_chosen  # (N, D)
    step = torch.linalg.vecdot(residual, direction) / torch.linalg.vecdot(direction, direction).clamp(min=1e-12)
    step = step.clamp(0.0, 1.0)[:, None]  # (N, 1)
    quantized = torch.addcmul(vq_chosen, step, direction)  # (N, D)

    # codes: argmax of the final weights  t W + (1 - t) P_vq, which is W's top entry or the VQ code
    with torch.no_grad():
        t = step.squeeze(1)
        codes = torch.where(t * best_weight > t * weight_of_vq + (1 - t), best_code, vq_codes)
    return quantized, codes


@torch.no_grad()
def simplex_support(y, codebook, vq_codes, support_size):
    """Each row of W = Proj_simplex(P), P = P_vq + y C^T, as a CSR matrix holding only its support.

    P is formed in row blocks that stay in cache, and only each row's largest entries are kept
    (`topk`, returned sorted, so the projection needs no sort): the VQ entry 1 + y . e_vq and the
    `support_size` largest others. Projecting a row's largest entries is exact when the last one
    gets no weight; rows whose last entry does get weight take the next `support_size` entries too
    (their rows of P formed again), until their support fits.
    Returns (row_starts, columns, weights), columns ascending within each row, and per row the top
    codeword, its weight and the VQ codeword's weight.
    """
    num_rows, num_codes = y.shape[0], codebook.shape[0]
    transposed, vq_column = codebook.t(), vq_codes[:, None]

    def largest_entries(rows, k, exclude):
        """The k largest entries of P's `rows` (all rows if None) outside the columns `exclude`."""
        count = num_rows if rows is None else rows.numel()
        values, index = y.new_empty(count, k), vq_codes.new_empty(count, k)
        for block in row_blocks(count, num_codes):
            picked = block if rows is None else rows[block]
            dense = y[picked] @ transposed  # (n, K), P off the VQ column
            dense.scatter_(1, exclude[block], float("-inf"))
            torch.topk(dense, k, dim=1, out=(values[block], index[block]))
        return values, index

    vq_values = 1 + torch.linalg.vecdot(y, codebook.index_select(0, vq_codes))
    values, index = largest_entries(None, min(support_size, num_codes - 1), vq_column)
    values, order = torch.cat([vq_values[:, None], values], 1).sort(dim=1, descending=True)
    index = torch.cat([vq_column, index], 1).gather(1, order)
    weights = project_to_simplex(values, presorted=True)
    open_rows = (weights[:, -1] > 0).nonzero().squeeze(1)
    # (rows, their index, their weights) per round in which rows finished; later rounds win
    finished = [(torch.arange(num_rows, device=y.device), index, weights)]
    values, index = values[open_rows], index[open_rows]
    while open_rows.numel() > 0 and index.shape[1] < num_codes:
        more_values, more_index = largest_entries(open_rows, min(support_size, num_codes - index.shape[1]), index)
        values, index = torch.cat([values, more_values], 1), torch.cat([index, more_index], 1)
        weights = project_to_simplex(values, presorted=True)
        fits = (weights[:, -1] == 0) | (index.shape[1] == num_codes)
        finished.append((open_rows[fits], index[fits], weights[fits]))
        open_rows, values, index = open_rows[~fits], values[~fits], index[~fits]

    lengths, best_code = torch.empty_like(vq_codes), torch.empty_like(vq_codes)
    best_weight, weight_of_vq = y.new_empty(num_rows), y.new_empty(num_rows)
    for rows, group_index, group_weights in finished:
        lengths[rows] = (group_weights > 0).sum(1)
        best_code[rows], best_weight[rows] = group_index[:, 0], group_weights[:, 0]
        weight_of_vq[rows] = (group_weights * (group_index == vq_column[rows])).sum(1)
    row_starts = torch.zeros(num_rows + 1, dtype=torch.long, device=y.device)
    row_starts[1:] = lengths.cumsum(0)
    columns = vq_codes.new_empty(int(row_starts[-1]))
    entries = y.new_empty(columns.shape)
    for number, (rows, group_index, group_weights) in enumerate(finished):
        group_index, order = group_index.sort(dim=1)  # CSR wants each row's columns ascending
        group_weights = group_weights.gather(1, order)
        in_support = group_weights > 0
        if number == 0 and len(finished) > 1:  # rows widened later are written by their own round
            in_support[torch.cat([later_rows for later_rows, _, _ in finished[1:]])] = False
        positions = (row_starts[rows, None] + in_support.cumsum(1) - 1)[in_support]
        columns[positions], entries[positions] = group_index[in_support], group_weights[in_support]
    return row_starts, columns, entries, best_code, best_weight, weight_of_vq
