"""SCQ's layer on CPU: the same function as the portable path in scq.py, with the per-row work in
numba kernels.

Why: on CPU, torch's `topk` over K costs more than VQ's whole search, and the layer's dozen
N x D autograd nodes each cost a pass over memory. Here each row's work happens in one place:
- `_support_rows`: the exact simplex projection of a row of P, touching only the entries that can
  be in its support. Any j entries of a row give a lower bound on the threshold tau
  (tau = max over j of (sum of the j largest - 1) / j), so the bound from the row's group maxima
  (vectorised in torch) rules out whole groups; the few survivors are projected exactly
  (Michelot's iteration from below). No sort, no topk.
- `_combine_forward`: C W over the support, the line search (unless `line_search=False`: then
  the output is C W, the paper's), the output and the code, per row.
- `_combine_backward`: the line search's, the projection's (sparsemax) and C W's backward per row,
  in one pass; the D x D and K x D parts stay in torch.
tests/stage1_tokenizer/test_quantizers.py and test_scq.py check that this layer and the
portable one agree in value and gradient, with and without the line search.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange

from .vq import row_blocks

SUPPORT_CAPACITY = 32  # support entries stored per row; a row with more triggers a wider rerun
DENOMINATOR_FLOOR = 1e-12  # the line search's ||C W - e_vq||^2 floor, as in the portable path


def follow_torch_threads() -> int:
    """numba's thread count for the next kernels: torch's (also used by gmvq_cpu.py)."""
    # Follow torch's thread setting (torchrun sets OMP_NUM_THREADS=1 per process, for instance).
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads


def _group_count(codebook_size: int) -> int:
    # Group g holds the columns k with k % groups == g, so the group maxima are one strided,
    # vectorised amax; groups must divide K.
    return next(groups for groups in (32, 16, 8, 4, 2, 1) if codebook_size % groups == 0)


@njit(fastmath=True, cache=True)
def _threshold_from_below(values, count, tau):  # pragma: no cover - compiled
    """Michelot's iteration from a lower bound `tau` on the simplex threshold of values[:count]:
    tau <- (sum of the values above tau - 1) / their number, until it stops rising. It ends at the
    threshold of values[:count] (exact for a row when they hold every entry above the start)."""
    while True:
        total, number = 0.0, 0.0
        for j in range(count):
            above = values[j] > tau
            total += values[j] if above else 0.0
            number += 1.0 if above else 0.0
        tighter = (total - 1.0) / number
        if tighter <= tau:
            return tau
        tau = tighter


@njit(parallel=True, fastmath=True, cache=True)
def _support_rows(values, group_max, columns, weights, lengths, chunks):  # pragma: no cover - compiled
    """Project each row of `values` (P, VQ entry included) onto the simplex; store its support,
    columns ascending, in `columns`/`weights` (first `lengths[i]` slots; at most their width)."""
    rows, width = values.shape
    groups = group_max.shape[1]
    capacity = columns.shape[1]
    for chunk in prange(chunks):
        maxima = np.empty(groups, values.dtype)
        kept_values = np.empty(width, values.dtype)
        kept_columns = np.empty(width, np.int64)
        for i in range(chunk * rows // chunks, (chunk + 1) * rows // chunks):
            # a lower bound on tau: the threshold of the group maxima alone (distinct entries)
            for g in range(groups):
                maxima[g] = group_max[i, g]
            bound = _threshold_from_below(maxima, groups, maxima.max() - 1.0)
            # entries at or below the bound are outside the support; keep the others
            kept = 0
            for g in range(groups):
                if maxima[g] > bound:
                    for k in range(g, width, groups):
                        kept_values[kept] = values[i, k]
                        kept_columns[kept] = k
                        kept += values[i, k] > bound
            tau = _threshold_from_below(kept_values, kept, bound)  # exact: the support is kept
            size = 0
            for j in range(kept):
                if kept_values[j] > tau:
                    if size < capacity:  # insert by column: the support is a handful of entries
                        slot = size
                        while slot > 0 and columns[i, slot - 1] > kept_columns[j]:
                            columns[i, slot] = columns[i, slot - 1]
                            weights[i, slot] = weights[i, slot - 1]
                            slot -= 1
                        columns[i, slot] = kept_columns[j]
                        weights[i, slot] = kept_values[j] - tau
                    size += 1
            lengths[i] = size


@njit(parallel=True, fastmath=True, cache=True)
def _combine_forward(
    codebook, vq_codes, residual, columns, weights, lengths, line_search, quantized, direction, dots, codes, chunks
):  # pragma: no cover - compiled
    """Per row: u = C W (W from `columns`/`weights`/`lengths`), then
    line_search:      d = u - e_vq, t = clamp(<r, d> / max(||d||^2, floor), 0, 1), out = e_vq + t d;
                      `direction` gets d and `dots` gets (<r, d>, ||d||^2) for the backward;
    not line_search:  out = u, the paper's output (t = 1; `direction` and `dots` are not touched).
    code = argmax of the final weights t W + (1 - t) P_vq (W's argmax when t = 1)."""
    rows, dim = residual.shape
    real = residual.dtype.type  # per-row scalars in the arrays' precision: no float64 round trips
    for chunk in prange(chunks):
        for i in range(chunk * rows // chunks, (chunk + 1) * rows // chunks):
            vq = vq_codes[i]
            for d in range(dim):
                quantized[i, d] = 0
            for j in range(lengths[i]):
                column, weight = columns[i, j], weights[i, j]
                for d in range(dim):
                    quantized[i, d] += weight * codebook[column, d]  # u = C W
            step = real(1)
            if line_search:
                for d in range(dim):
                    direction[i, d] = quantized[i, d] - codebook[vq, d]
                along, squared = real(0), real(0)
                for d in range(dim):
                    along += residual[i, d] * direction[i, d]
                for d in range(dim):
                    squared += direction[i, d] * direction[i, d]
                dots[i, 0], dots[i, 1] = along, squared
                step = min(max(along / max(squared, real(DENOMINATOR_FLOOR)), real(0)), real(1))
                for d in range(dim):
                    quantized[i, d] = codebook[vq, d] + step * direction[i, d]
            best, best_weight = vq, 1 - step
            for j in range(lengths[i]):
                if columns[i, j] == vq:
                    best_weight += step * weights[i, j]
            for j in range(lengths[i]):
                if columns[i, j] != vq and step * weights[i, j] > best_weight:
                    best, best_weight = columns[i, j], step * weights[i, j]
            codes[i] = best


@njit(parallel=True, fastmath=True, cache=True)
def _combine_backward(
    codebook, transformed, residual, direction, dots, columns, weights, lengths, vq_codes, line_search, grad_out,
    grad_residual, direct_parts, through_y_parts, chunks,
):  # pragma: no cover - compiled
    """The backward of `_combine_forward` and of W = Proj_simplex(V), V = y C^T + P_vq, y = r G^-1,
    per row, with B = C G^-1 (`transformed`) so that no N x D x D product is needed:
        line_search:      g_t = <g_out, d> (through the clamps),  g_d = t g_out + g_along r + 2 g_squared d,
                          g_r starts at g_along d;
        not line_search:  out = C W = e_vq + d, so g_d = g_out and g_r starts at 0;
        then  g_W = C g_d at the support,  g_V = g_W - its mean over the support,
        g_r += sum g_V b  (= g_y G^-1),  g_e = g_out - g_d - g_r,
        direct[c] += w g_d, direct[vq] += g_e,  through_y[c] += g_V r  (its share is through_y G^-1).
    `grad_residual` gets g_r when it has rows (z not detached)."""
    rows, dim = residual.shape
    capacity = columns.shape[1]
    real = residual.dtype.type
    for chunk in prange(chunks):
        direct, through_y = direct_parts[chunk], through_y_parts[chunk]
        grad_direction = np.empty(dim, residual.dtype)
        grad_r = np.empty(dim, residual.dtype)
        grad_values = np.empty(capacity, residual.dtype)
        for i in range(chunk * rows // chunks, (chunk + 1) * rows // chunks):
            if line_search:
                along, squared = dots[i, 0], dots[i, 1]
                floored = max(squared, real(DENOMINATOR_FLOOR))
                raw_step = along / floored
                step = min(max(raw_step, real(0)), real(1))
                grad_step = real(0)
                for d in range(dim):
                    grad_step += grad_out[i, d] * direction[i, d]
                # torch's clamp passes the gradient on [min, max], ends included
                if raw_step < 0 or raw_step > 1:
                    grad_step = real(0)
                grad_along = grad_step / floored
                grad_squared = -grad_step * along / (floored * floored) if squared >= DENOMINATOR_FLOOR else real(0)
                for d in range(dim):
                    grad_direction[d] = (
                        step * grad_out[i, d] + grad_along * residual[i, d] + 2 * grad_squared * direction[i, d]
                    )
                for d in range(dim):
                    grad_r[d] = grad_along * direction[i, d]
            else:
                for d in range(dim):
                    grad_direction[d] = grad_out[i, d]
                for d in range(dim):
                    grad_r[d] = real(0)
            size = lengths[i]
            mean = real(0)
            for j in range(size):
                column, total = columns[i, j], real(0)
                for d in range(dim):
                    total += grad_direction[d] * codebook[column, d]
                grad_values[j] = total
                mean += total
            mean /= size
            for j in range(size):
                column, grad_value, weight = columns[i, j], grad_values[j] - mean, weights[i, j]
                for d in range(dim):
                    grad_r[d] += grad_value * transformed[column, d]
                for d in range(dim):
                    direct[column, d] += weight * grad_direction[d]
                for d in range(dim):
                    through_y[column, d] += grad_value * residual[i, d]
            vq = vq_codes[i]
            for d in range(dim):
                direct[vq, d] += grad_out[i, d] - grad_direction[d] - grad_r[d]
            if grad_residual.shape[0] > 0:
                for d in range(dim):
                    grad_residual[i, d] = grad_r[d]


def simplex_support_rows(residual: torch.Tensor, transformed: torch.Tensor, vq_codes: torch.Tensor):
    """The support of W = Proj_simplex(P), P = P_vq + r B^T (B = C G^-1, so r B^T = y C^T), padded:
    (columns, weights, lengths), row i's entries in its first lengths[i] slots, columns ascending.
    Exact for every row."""
    num_rows, num_codes = residual.shape[0], transformed.shape[0]
    groups, chunks = _group_count(num_codes), 2 * follow_torch_threads()
    transposed, ones = transformed.t(), residual.new_ones(num_rows, 1)
    capacity = min(SUPPORT_CAPACITY, num_codes)
    while True:
        columns = torch.empty(num_rows, capacity, dtype=torch.int32)  # small: fresh memory costs page faults
        weights = residual.new_empty(num_rows, capacity)
        lengths = torch.empty(num_rows, dtype=torch.int32)
        for rows in row_blocks(num_rows, num_codes):
            values = torch.mm(residual[rows], transposed).scatter_add_(1, vq_codes[rows, None], ones[rows])
            group_max = values.view(-1, num_codes // groups, groups).amax(1)
            _support_rows(
                values.numpy(), group_max.numpy(), columns[rows].numpy(), weights[rows].numpy(),
                lengths[rows].numpy(), chunks,
            )  # fmt: skip
        widest = int(lengths.max()) if num_rows else 0
        if widest <= capacity:
            return columns, weights, lengths
        capacity = widest  # rare (a tiny lam): run again with room for every row


class CpuSoftConvexLayer(torch.autograd.Function):
    """(quantized, codes) = SCQ's layer for `flat` (N, D) and `codebook` (K, D), given the VQ codes,
    their codewords, G^-1 = (C C^T + lam I_D)^-1 and `line_search` (False: the output is C W, the
    paper's); the same function as scq.py's portable path, for CPU tensors. `vq_chosen` and
    `gram_inverse` come in for their values: the codebook's gradient returned here already
    includes the paths through them."""

    @staticmethod
    def forward(ctx, flat, codebook, vq_codes, vq_chosen, gram_inverse, line_search=True):
        flat, codebook = flat.detach().contiguous(), codebook.detach().contiguous()
        gram_inverse = gram_inverse.detach()
        transformed = codebook @ gram_inverse  # B = C G^-1, (K, D)
        residual = flat - vq_chosen.detach()  # r = z - e_vq, (N, D)
        columns, weights, lengths = simplex_support_rows(residual, transformed, vq_codes)
        quantized, codes = torch.empty_like(flat), torch.empty_like(vq_codes)  # (N, D), (N,)
        # the line search's d = C W - e_vq (N, D) and (<r, d>, ||d||^2) (N, 2), kept for its backward
        searched_rows = flat.shape[0] if line_search else 0
        direction, dots = flat.new_empty(searched_rows, flat.shape[1]), flat.new_empty(searched_rows, 2)
        _combine_forward(
            codebook.numpy(), vq_codes.numpy(), residual.numpy(), columns.numpy(), weights.numpy(),
            lengths.numpy(), bool(line_search), quantized.numpy(), direction.numpy(), dots.numpy(), codes.numpy(),
            2 * follow_torch_threads(),
        )  # fmt: skip
        ctx.save_for_backward(codebook, vq_codes, gram_inverse, transformed, residual, direction, dots, columns, weights, lengths)
        ctx.line_search = bool(line_search)
        ctx.mark_non_differentiable(codes)
        return quantized, codes

    @staticmethod
    def backward(ctx, grad_out, _grad_codes):
        codebook, vq_codes, gram_inverse, transformed, residual, direction, dots, columns, weights, lengths = (
            ctx.saved_tensors
        )
        chunks = 2 * follow_torch_threads()
        grad_residual = torch.empty_like(residual) if ctx.needs_input_grad[0] else residual.new_empty(0, residual.shape[1])
        direct, through_y = codebook.new_zeros(2, chunks, *codebook.shape)  # per-chunk sums, (chunks, K, D) each
        _combine_backward(
            codebook.numpy(), transformed.numpy(), residual.numpy(), direction.numpy(), dots.numpy(),
            columns.numpy(), weights.numpy(), lengths.numpy(), vq_codes.numpy(), ctx.line_search,
            grad_out.contiguous().numpy(), grad_residual.numpy(), direct.numpy(), through_y.numpy(), chunks,
        )  # fmt: skip
        through_y = through_y.sum(0)  # sum g_V r per codeword, (K, D)
        # y = r G^-1: g_C += through_y G^-1; g_(G^-1) = r^T g_y = through_y^T C;
        # G = C^T C + lam I: g_G = -G^-1 g_(G^-1) G^-1, g_C += C (g_G + g_G^T)
        grad_gram = -gram_inverse @ (through_y.t() @ codebook) @ gram_inverse  # (D, D)
        grad_codebook = direct.sum(0).addmm_(through_y, gram_inverse).addmm_(codebook, grad_gram + grad_gram.t())
        return grad_residual if ctx.needs_input_grad[0] else None, grad_codebook, None, None, None, None
