"""GM-VQ's per-row work on CPU: numba kernels for `MixtureLayer` (gmvq.py), one call per block of
rows, the same function as the portable torch version there (`torch_forward_rows`,
`torch_backward_rows`; tests check that they agree).

Why: per (vector, codeword) entry a GM-VQ step needs a distance, a logit, the exponentials of two
softmaxes (the posterior and the Gumbel-softmax sample), a Gumbel draw (two logs) and the KL's
log: about five transcendental functions over N x K entries in the forward pass, and again in
the backward pass, which recomputes them instead of keeping N x K tensors. Torch runs each step
as a pass over an N x K tensor; numba without Intel's SVML calls libm's scalar expf/logf (about
15 ns each here, not vectorised). Here a row's work stays in cache, and
- exp and log (float32) are polynomials written with fused multiply-adds, which LLVM vectorises
  (16 lanes with AVX-512) and cannot reassociate (fastmath); float64 arrays use math.exp/math.log;
- the Gumbel noise is a counter-based hash of (seed, row * K + code) (`gumbel_uniform_bits`, the
  same hash as gmvq.py's `gumbel_noise`), so the backward pass recomputes it, and no draw depends
  on the number of threads;
- sums over rows are kept per fixed chunk of rows (not per thread) and added up in order, so the
  results do not depend on the number of threads either;
- a kernel call computes everything per row that the block's products do not (row norms, the
  noise's sigma and its gradient): each call, like each torch op, is a parallel region, and on a
  loaded machine every region can cost a scheduler time slice.
The N x K x D products stay in torch (BLAS), block by block (gmvq.py). Every function compiles
with error_model="numpy": numba's default checks each float division for zero (to raise), and
that branch keeps LLVM from vectorising the loop.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from .scq_cpu import follow_torch_threads

ROWS_PER_CHUNK = 16  # rows per parallel work item; per-code sums are kept per chunk, then added in order

# z-term kinds (the `mode` argument of the kernels)
Z_TERM_KL = 0  # Gaussian KL per dimension, 0.5 (rho - 1 - log rho), rho = kl_scale * d
Z_TERM_DISTANCE = 1  # d / L
Z_TERM_NONE = 2  # no z term (the KL reading with noise_scale = 0)
RATIO_FLOOR = 1e-6  # rho is clamped here (the KL's log), as in the reference

# SplitMix64's increment and mixing constants (Steele, Lea & Flood 2014): the k-th output for a
# seed is mix(seed + (k + 1) * GOLDEN_GAMMA).
GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_2 = np.uint64(0x94D049BB133111EB)
UNIFORM_BITS = 23  # u = (bits + 0.5) / 2^23 is exact in float32 and lies in (0, 1)

_LOG2_E = np.float32(1.4426950408889634)
_LN2_HIGH = np.float32(0.693145751953125)  # ln 2 = high + low; k * high is exact for |k| < 2^8
_LN2_LOW = np.float32(1.428606765330187e-06)
_EXP_FLOOR = np.float32(-87.0)  # exp below this returns 0 (e^-87 is near float32's smallest normal)
_EXP_CEILING = np.float32(88.0)
_SQRT_HALF_BITS = np.int32(0x3F3504F3)  # float32 bits of sqrt(1/2)


# -- vectorisable scalar pieces -------------------------------------------------------------------


@intrinsic
def _float32_bits(typingctx, value):
    """The bits of a float32 as an int32: a bitcast, which LLVM vectorises (a view would not)."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose bits are the low 32 bits of an integer (numba widens int32 arithmetic
    to int64)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once. fastmath's reassociation leaves it alone, which keeps the split
    range reductions below exact."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return a(a, b, c), codegen


def fast_exp(x):  # the compiled versions are the overload below
    return math.exp(x)


def fast_log(x):
    return math.log(x)


@overload(fast_exp, inline="always")
def _fast_exp(x):
    if x != types.float32:
        return lambda x: math.exp(x)

    def exp_float32(x):
        """exp x = 2^k e^r, k = round(x / ln 2), |r| <= ln 2 / 2 (Cody-Waite: r = x - k ln 2 in
        two exact steps), e^r by its Taylor series to r^7 (remainder < 1e-8); within 2 ulp.
        Below -87 it returns 0 (the true value is under 1.7e-38)."""
        clamped = min(max(x, _EXP_FLOOR), _EXP_CEILING)
        k = np.floor(_fma(clamped, _LOG2_E, np.float32(0.5)))
        r = _fma(-k, _LN2_HIGH, clamped)
        r = _fma(-k, _LN2_LOW, r)
        p = _fma(np.float32(1 / 5040), r, np.float32(1 / 720))
        p = _fma(p, r, np.float32(1 / 120))
        p = _fma(p, r, np.float32(1 / 24))
        p = _fma(p, r, np.float32(1 / 6))
        p = _fma(p, r, np.float32(0.5))
        p = _fma(p, r, np.float32(1.0))
        p = _fma(p, r, np.float32(1.0))
        two_to_k = _float32_from_bits((np.int32(k) + np.int32(127)) << np.int32(23))
        return p * two_to_k if x >= _EXP_FLOOR else np.float32(0.0)

    return exp_float32


@overload(fast_log, inline="always")
def _fast_log(x):
    if x != types.float32:
        return lambda x: math.log(x)

    def log_float32(x):
        """log x for a positive normal float32: x = 2^e m with m in [sqrt(1/2), sqrt(2)) (from the
        bits), log m = 2 atanh t = 2 (t + t^3/3 + ... + t^11/11), t = (m - 1) / (m + 1),
        |t| <= 0.172 (remainder < 1e-10); within 3 ulp."""
        bits = _float32_bits(x)
        exponent = (bits - _SQRT_HALF_BITS) >> np.int32(23)
        mantissa = _float32_from_bits(bits - (exponent << np.int32(23)))
        t = (mantissa - np.float32(1.0)) / (mantissa + np.float32(1.0))
        t2 = t * t
        p = _fma(np.float32(2 / 11), t2, np.float32(2 / 9))
        p = _fma(p, t2, np.float32(2 / 7))
        p = _fma(p, t2, np.float32(2 / 5))
        p = _fma(p, t2, np.float32(2 / 3))
        p = _fma(p, t2, np.float32(2.0))
        e = np.float32(exponent)
        return _fma(e, _LN2_HIGH, _fma(e, _LN2_LOW, p * t))

    return log_float32


def largest(values):  # the compiled versions are the overload below
    return values.max()


@overload(largest, inline="always")
def _largest(values):
    if values.dtype != types.float32:

        def largest_generic(values):
            top = values[0]
            for c in range(1, values.shape[0]):
                top = max(top, values[c])
            return top

        return largest_generic

    def largest_float32(values):
        """The maximum as an integer maximum: LLVM vectorises that, but not a float maximum (it
        needs no-NaN flags that numba does not put on comparisons). A float32's bits as an int32,
        with a negative float's magnitude bits flipped, sort as the floats do (and flipping
        again gives the bits back)."""
        top = np.int64(-(2**31))
        for c in range(values.shape[0]):
            bits = _float32_bits(values[c])
            top = max(top, bits ^ ((bits >> 31) & 0x7FFFFFFF))
        return _float32_from_bits(top ^ ((top >> 31) & 0x7FFFFFFF))

    return largest_float32


@njit(error_model="numpy", inline="always")
def gumbel_uniform_bits(seed, counter):  # pragma: no cover - compiled
    """23 uniform bits for entry `counter` (row * K + code): SplitMix64's output number
    `counter` for `seed` (all uint64, wrapping)."""
    z = seed + (counter + np.uint64(1)) * GOLDEN_GAMMA
    z = (z ^ (z >> np.uint64(30))) * MIX_1
    z = (z ^ (z >> np.uint64(27))) * MIX_2
    z = z ^ (z >> np.uint64(31))
    return np.int64(z >> np.uint64(64 - UNIFORM_BITS))


# -- per-row passes (each a vectorised loop over the K codes) ------------------------------------


@njit(fastmath=True, error_model="numpy", cache=True)
def _distances_and_logits(
    z, products, weights, code_sq, code_weighted_sq, logit_scale, raw, logits
):  # pragma: no cover - compiled
    """raw[c] = ||z - mu_c||^2 before its clamp at 0 and logits[c] = -sum_d w_d (z_d - mu_cd)^2 /
    (2 sigma_z^2), from products = [z . mu_c | (w z) . mu_c]; returns the largest logit."""
    real = raw.dtype.type
    row_sq, row_weighted_sq = real(0), real(0)
    for d in range(z.shape[0]):
        row_sq += z[d] * z[d]
        row_weighted_sq += weights[d] * z[d] * z[d]
    codes = raw.shape[0]
    two = real(2)
    for c in range(codes):
        raw[c] = row_sq - two * products[c] + code_sq[c]
        logits[c] = -logit_scale * (row_weighted_sq - two * products[codes + c] + code_weighted_sq[c])
    return largest(logits)


@njit(fastmath=True, error_model="numpy", cache=True)
def _first_index_of(values, target):  # pragma: no cover - compiled
    """The first c with values[c] == target (torch's argmax convention), as an integer minimum,
    which vectorises (a loop that stops early does not)."""
    count = values.shape[0]
    first = count
    for c in range(count):
        first = min(first, c if values[c] == target else count)
    return first if first < count else 0  # no match only with NaN logits (check_finite=False)


@njit(fastmath=True, error_model="numpy", cache=True)
def _exponentials(logits, top, out):  # pragma: no cover - compiled
    """out[c] = exp(logits[c] - top); returns their sum (a softmax's normaliser). `out` must be
    another array than `logits`: in place, the loop is not vectorised."""
    total = out.dtype.type(0)
    for c in range(logits.shape[0]):
        out[c] = fast_exp(logits[c] - top)
        total += out[c]
    return total


@njit(fastmath=True, error_model="numpy", cache=True)
def _z_terms(raw, mode, kl_scale, inv_dim, values, slopes):  # pragma: no cover - compiled
    """Per code: the z term (per dimension) and its derivative in the distance d = max(raw, 0).
    KL: 0.5 (rho - 1 - log rho), rho = max(kl_scale d, 1e-6), slope 0.5 (1 - 1 / rho) kl_scale
    (0 under the floor); distance: d / L, slope 1 / L. An empty `slopes` skips the slopes (the
    forward pass needs none: a division per entry saved)."""
    real = values.dtype.type
    half, one, floor, zero = real(0.5), real(1), real(RATIO_FLOOR), real(0)
    with_slopes = slopes.shape[0] > 0
    if mode == Z_TERM_KL:
        for c in range(raw.shape[0]):  # one pass: the branch is loop-invariant, LLVM hoists it
            ratio = kl_scale * max(raw[c], zero)
            clamped = max(ratio, floor)
            values[c] = half * (clamped - one - fast_log(clamped))
            if with_slopes:
                slopes[c] = half * (one - one / clamped) * kl_scale if ratio >= floor else zero
    elif mode == Z_TERM_DISTANCE:
        for c in range(raw.shape[0]):
            values[c] = max(raw[c], zero) * inv_dim
        slopes[:] = inv_dim
    else:
        values[:] = zero
        slopes[:] = zero


@njit(fastmath=True, error_model="numpy", cache=True)
def _perturbed_logits(logits, inv_temperature, seed, first_counter, out):  # pragma: no cover - compiled
    """out[c] = (logits[c] + g_c) / tau, g_c = -log(-log u_c) ~ Gumbel(0, 1) (u_c from the hash);
    returns their largest."""
    real = out.dtype.type
    step = real(1.0 / (1 << UNIFORM_BITS))
    for c in range(logits.shape[0]):
        uniform = (real(gumbel_uniform_bits(seed, first_counter + np.uint64(c))) + real(0.5)) * step
        out[c] = (logits[c] - fast_log(-fast_log(uniform))) * inv_temperature
    return largest(out)


# -- the kernels ----------------------------------------------------------------------------------


@njit(parallel=True, fastmath=True, error_model="numpy", cache=True)
def forward_rows(
    flat, products, weights, code_sq, code_weighted_sq, logit_scale, mode, kl_scale, inv_dim, training,
    inv_temperature, variance_scale, seed, first_row, codes, z_terms, sigmas, soft, posterior_sum,
):  # pragma: no cover - compiled
    """Per row i of a block (flat (n, D), products = [z_i . mu_c | (w z_i) . mu_c], (n, 2K)):
    codes[i] = argmax_c l_c, z_terms[i] = sum_c q_c k_c (q = softmax(l), k the z term), and in
    training soft[i] = s = softmax((l + g) / tau) and sigmas[i] = sqrt(variance_scale sum_c s_c d_c)
    (variance_scale = noise_scale / L). posterior_sum (K,) += sum of q over the block's rows."""
    rows, num_codes = products.shape[0], code_sq.shape[0]
    dtype = products.dtype
    real = dtype.type
    chunks = (rows + ROWS_PER_CHUNK - 1) // ROWS_PER_CHUNK
    chunk_sums = np.empty((chunks, num_codes), dtype)
    for chunk in prange(chunks):
        raw, logits = np.empty(num_codes, dtype), np.empty(num_codes, dtype)
        weights_row, values, no_slopes = np.empty(num_codes, dtype), np.empty(num_codes, dtype), np.empty(0, dtype)
        sums = chunk_sums[chunk]
        sums[:] = 0
        for i in range(chunk * ROWS_PER_CHUNK, min(rows, (chunk + 1) * ROWS_PER_CHUNK)):
            top = _distances_and_logits(
                flat[i], products[i], weights, code_sq, code_weighted_sq, logit_scale, raw, logits
            )
            codes[i] = _first_index_of(logits, top)
            inv_total = real(1) / _exponentials(logits, top, weights_row)  # q = weights_row * inv_total
            _z_terms(raw, mode, kl_scale, inv_dim, values, no_slopes)
            weighted = real(0)
            for c in range(num_codes):
                weighted += weights_row[c] * values[c]
                sums[c] += weights_row[c] * inv_total
            z_terms[i] = weighted * inv_total
            if training:
                counter = np.uint64(first_row + i) * np.uint64(num_codes)
                # (l + g) / tau into `values` (free by now), not in place: LLVM does not vectorise
                # `_exponentials` with its input and output the same array (10x slower)
                top = _perturbed_logits(logits, inv_temperature, seed, counter, values)
                inv_total = real(1) / _exponentials(values, top, weights_row)  # s = weights_row * inv_total
                spread = real(0)
                for c in range(num_codes):
                    sample = weights_row[c] * inv_total
                    soft[i, c] = sample
                    spread += sample * max(raw[c], real(0))
                sigmas[i] = np.sqrt(variance_scale * spread)
    for chunk in range(chunks):  # in a fixed order: the same sums for any thread count
        for c in range(num_codes):
            posterior_sum[c] += chunk_sums[chunk, c]


@njit(parallel=True, fastmath=True, error_model="numpy", cache=True)
def backward_rows(
    flat, products, soft_grads, weights, code_sq, code_weighted_sq, logit_scale, mode, kl_scale, inv_dim,
    training, inv_temperature, variance_scale, seed, first_row, z_term_grad, posterior_grads, grad_out, noise,
    sigmas, grad_flat, column_sums,
):  # pragma: no cover - compiled
    """The backward pass of `forward_rows`, per row, recomputing what it needs. In: flat, products
    (as forward's), soft_grads[i, c] = g_out_i . mu_c, z_term_grad = dloss/dz_terms[i] (one
    number), posterior_grads[c] = dloss/dq_ic from the aggregated KL, grad_out, noise (eps, or
    no rows) and sigmas (training). Out, in place:
        products[i] = [G_d | G_w]: dloss/d(d_ic) (0 where raw < 0, the clamp), and
                      dloss/d((w z_i) . mu_c) = 2 a dloss/dl_ic,   a = logit_scale;
        soft_grads[i] = s_i (training); grad_flat[i] = 2 z_i sum_c G_d[i, c] (if it has rows);
        column_sums (2K,) += [sum of G_d | sum of G_w] over the block's rows.
    With sigma = sqrt(variance_scale spread): dloss/dspread = (g_out . eps) variance_scale / (2 sigma)
    (0 at sigma = 0), dq_c = posterior_grads[c] + z_term_grad k_c, ds_c = soft_grads[i, c] +
    dloss/dspread d_c:
        dl_c = q_c (dq_c - sum_j q_j dq_j) + s_c (ds_c - sum_j s_j ds_j) / tau   (two softmaxes)
        dd_c = z_term_grad q_c k'_c + dloss/dspread s_c"""
    rows, num_codes = products.shape[0], code_sq.shape[0]
    dtype = products.dtype
    real = dtype.type
    chunks = (rows + ROWS_PER_CHUNK - 1) // ROWS_PER_CHUNK
    chunk_sums = np.empty((chunks, 2 * num_codes), dtype)
    for chunk in prange(chunks):
        raw, logits = np.empty(num_codes, dtype), np.empty(num_codes, dtype)
        weights_row, values, slopes = np.empty(num_codes, dtype), np.empty(num_codes, dtype), np.empty(num_codes, dtype)
        grad_logits, grad_distances = np.empty(num_codes, dtype), np.empty(num_codes, dtype)
        sums = chunk_sums[chunk]
        sums[:] = 0
        for i in range(chunk * ROWS_PER_CHUNK, min(rows, (chunk + 1) * ROWS_PER_CHUNK)):
            top = _distances_and_logits(
                flat[i], products[i], weights, code_sq, code_weighted_sq, logit_scale, raw, logits
            )
            inv_total = real(1) / _exponentials(logits, top, weights_row)
            _z_terms(raw, mode, kl_scale, inv_dim, values, slopes)
            mean = real(0)  # sum_j q_j dq_j
            for c in range(num_codes):
                posterior = weights_row[c] * inv_total
                grad_posterior = posterior_grads[c] + z_term_grad * values[c]
                weights_row[c], grad_logits[c] = posterior, grad_posterior
                mean += posterior * grad_posterior
            for c in range(num_codes):
                grad_distances[c] = z_term_grad * weights_row[c] * slopes[c]
                grad_logits[c] = weights_row[c] * (grad_logits[c] - mean)
            if training:
                spread_grad = real(0)
                if noise.shape[0] > 0 and sigmas[i] > 0:  # at sigma = 0 the subgradient 0
                    along = real(0)
                    for d in range(noise.shape[1]):
                        along += grad_out[i, d] * noise[i, d]
                    spread_grad = along * variance_scale / (real(2) * sigmas[i])
                counter = np.uint64(first_row + i) * np.uint64(num_codes)
                top = _perturbed_logits(logits, inv_temperature, seed, counter, values)  # not in place (forward_rows)
                inv_total = real(1) / _exponentials(values, top, weights_row)
                mean = real(0)  # sum_j s_j ds_j
                for c in range(num_codes):
                    sample = weights_row[c] * inv_total
                    grad_sample = soft_grads[i, c] + spread_grad * max(raw[c], real(0))
                    weights_row[c], values[c] = sample, grad_sample
                    mean += sample * grad_sample
                for c in range(num_codes):
                    grad_logits[c] += weights_row[c] * (values[c] - mean) * inv_temperature
                    grad_distances[c] += spread_grad * weights_row[c]
                    soft_grads[i, c] = weights_row[c]
            row_sum = real(0)
            scale = real(2) * logit_scale
            for c in range(num_codes):
                grad_distance = grad_distances[c] if raw[c] >= real(0) else real(0)  # torch's clamp passes 0
                grad_weighted = scale * grad_logits[c]
                products[i, c] = grad_distance
                products[i, num_codes + c] = grad_weighted
                sums[c] += grad_distance
                sums[num_codes + c] += grad_weighted
                row_sum += grad_distance
            if grad_flat.shape[0] > 0:
                for d in range(flat.shape[1]):
                    grad_flat[i, d] = real(2) * row_sum * flat[i, d]
    for chunk in range(chunks):  # in a fixed order: the same sums for any thread count
        for c in range(2 * num_codes):
            column_sums[c] += chunk_sums[chunk, c]


def _real(dtype):
    return np.float32 if dtype == torch.float32 else np.float64


def _rows_or_empty(tensor, columns, real):
    return tensor.numpy() if tensor is not None else np.empty((0, columns), real)


def cpu_forward_rows(flat, products, weights, code_sq, code_weighted_sq, settings, first_row, soft, out):
    """`forward_rows` on torch tensors. `out` = (codes, z_terms, sigmas, posterior_sum): the
    block's slices, written (posterior_sum accumulated); `soft` (n, K) receives s in training."""
    follow_torch_threads()
    real = _real(flat.dtype)
    codes, z_terms, sigmas, posterior_sum = out
    forward_rows(
        flat.numpy(), products.numpy(), weights.numpy(), code_sq.numpy(), code_weighted_sq.numpy(),
        real(settings.logit_scale), settings.z_term_mode, real(settings.kl_scale), real(settings.inv_dim),
        settings.training, real(1 / settings.temperature), real(settings.noise_scale * settings.inv_dim),
        np.uint64(settings.seed), first_row, codes.numpy(), z_terms.numpy(), sigmas.numpy(),
        _rows_or_empty(soft if settings.training else None, 0, real), posterior_sum.numpy(),
    )  # fmt: skip


def cpu_backward_rows(
    flat, products, soft_grads, weights, code_sq, code_weighted_sq, settings, first_row, z_term_grad,
    posterior_grads, grad_out, noise, sigmas, grad_flat, column_sums,
):  # fmt: skip
    """`backward_rows` on torch tensors (None for the tensors a mode does not use)."""
    follow_torch_threads()
    real = _real(flat.dtype)
    dim = flat.shape[1]
    backward_rows(
        flat.numpy(), products.numpy(), _rows_or_empty(soft_grads if settings.training else None, 0, real),
        weights.numpy(), code_sq.numpy(), code_weighted_sq.numpy(), real(settings.logit_scale),
        settings.z_term_mode, real(settings.kl_scale), real(settings.inv_dim), settings.training,
        real(1 / settings.temperature), real(settings.noise_scale * settings.inv_dim), np.uint64(settings.seed),
        first_row, real(z_term_grad), posterior_grads.numpy(), _rows_or_empty(grad_out, dim, real),
        _rows_or_empty(noise, dim, real), _rows_or_empty(sigmas, 0, real).reshape(-1),
        _rows_or_empty(grad_flat, dim, real), column_sums.numpy(),
    )  # fmt: skip
