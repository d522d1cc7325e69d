"""GM-VQ: Gaussian-mixture vector quantization with the aggregated-posterior ELBO (ALBO).

Yan, Wu, Shah, Liu 2024, "Gaussian Mixture Vector Quantization with Aggregated Categorical
Posterior", arXiv 2410.10180. No reference code is public; the readings we chose, the uncertain
ones and the derivation of the weights are in docs/quantizers.md.

Generative model: c ~ Uniform(K), z | c ~ N(mu_c, sigma_z^2 I); the codebook holds the means mu_c.
zhat is the encoder's output, L = dim, d_c = ||zhat - mu_c||^2, s = noise_scale.

    logits    l_c = - sum_d w_d (zhat_d - mu_{c,d})^2 / (2 sigma_z^2)    w = exp(log_dim_weights)
    posterior q(c | x) = softmax(l),  codes = argmax_c l_c (both modes)
    variance  sigma_c^2(x) = s d_c / L                                  (adaptive, not learned)
    training  y = GumbelSoftmax(l, tau) (soft weights),  z = sum_c y_c mu_c + sigma * eps,
              sigma^2 = sum_c y_c sigma_c^2(x),  tau annealed exponentially
    eval      z = mu_codes   (deterministic)
    loss      gamma * mean over vectors of sum_c q(c|x) k_c  +  beta * KL(qbar_B || Uniform(K))
              qbar_B = mean of q(c | x) over every latent vector in the batch,
              KL(qbar_B || U) = log K + sum_c qbar_c log qbar_c
    z term k_c, per dimension (`z_term`):
      "kl"        KL(N(mu_c, sigma_c^2 I) || N(mu_c, sigma_z^2 I)) / L = 0.5 (rho_c - 1 - log rho_c),
                  rho_c = s d_c / (L sigma_z^2): the KL of the noise actually drawn. With s = 0 z is
                  deterministic (a point mass at mu_c), for which no Gaussian KL is defined; the
                  parameter-dependent part of the ELBO's z term is then 0, and k_c = 0 (the term is
                  dropped; use z_term="distance" to keep a pull towards the codewords).
      "distance"  d_c / L (the posterior-weighted squared distance, a mean over elements).

There is no commitment loss and no EMA: the posterior-weighted term sends a gradient to every
codeword. beta=None takes the ELBO's weight relative to gamma: gamma / L ("kl") or
2 sigma_z^2 gamma / L ("distance"); a larger beta is the paper's "GM-VQ + Entropy" (the default
0.01 is 64x the ELBO's weight with gamma = 0.01, L = 64).

How it is computed (`MixtureLayer`): a custom autograd function, row block by row block, keeps
no N x K tensor: per block, one N x D by D x 2K product gives z . mu_c and (w z) . mu_c, the
per-row work (distances, logits, both softmaxes, the Gumbel noise, the z terms) runs in one
kernel (numba on CPU, gmvq_cpu.py; `torch_forward_rows`/`torch_backward_rows` elsewhere), and
the backward pass recomputes it. The Gumbel noise is a counter-based hash of a seed drawn from
torch's global generator and of the entry (`gumbel_noise`), so it is reproducible under
`torch.manual_seed`, is the same on every path and for every thread count, and needs no storage.
Under bf16/fp16 autocast the layer runs in float32 (the logits are distances times 50) and
returns the input's dtype.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .base import BaseQuantizer
from .gmvq_cpu import (
    GOLDEN_GAMMA,
    MIX_1,
    MIX_2,
    RATIO_FLOOR,
    UNIFORM_BITS,
    Z_TERM_DISTANCE,
    Z_TERM_KL,
    Z_TERM_NONE,
    cpu_backward_rows,
    cpu_forward_rows,
)

Z_TERMS = ("kl", "distance")
AGGREGATE_FLOOR = 1e-12  # qbar is clamped here inside the aggregated KL's log
# N x K entries per row block. Small blocks keep a block's products in cache between the matmul
# and the kernel that reads them; every block costs a few parallel regions (torch ops, kernel
# calls), and on a loaded machine each region can cost a scheduler time slice. 2^20 was the
# fastest on a quiet 2-core machine (N=32768, D=64, K=512); 2^22 keeps fewer regions for loaded
# ones. The block's buffers hold 3 numbers an entry (12 MB in float32).
BLOCK_ENTRIES = 2**20


@dataclass(frozen=True)
class MixtureSettings:
    """What `MixtureLayer` needs besides its tensors (see GaussianMixtureQuantizer)."""

    logit_scale: float  # a = 1 / (2 sigma_z^2)
    z_term_mode: int  # Z_TERM_KL, Z_TERM_DISTANCE or Z_TERM_NONE (gmvq_cpu.py)
    kl_scale: float  # s / (L sigma_z^2): rho_c = kl_scale * d_c
    inv_dim: float  # 1 / L
    gamma: float
    beta: float  # the weight in use (None already resolved)
    noise_scale: float
    training: bool
    temperature: float
    seed: int  # of the Gumbel noise (training)
    cpu_kernels: bool


class GaussianMixtureQuantizer(BaseQuantizer):
    """GM-VQ (module docstring; docs/quantizers.md).

    sigma_z: std of p(z | c); the logits are scaled by 1 / (2 sigma_z^2).
    gamma: weight of the z term. beta: weight of KL(qbar_B || U); None takes the ELBO's weight
    relative to gamma (`elbo_beta`), a larger value is the paper's "+Entropy" variant.
    z_term: "kl" (the Gaussian KL of the noise drawn) or "distance" (posterior-weighted d / L).
    noise_scale: s in sigma_c^2 = s ||zhat - mu_c||^2 / L; 0 draws no noise (and, with "kl",
    drops the z term: module docstring).
    temperature_start, temperature_end, temperature_anneal_steps: the Gumbel temperature decays
    exponentially from start to end over that many training steps (an int >= 1), then stays.
    learn_dim_weights: learn the per-dimension weights w of the logits (else fixed at 1).
    cpu_kernels: on CPU, run the per-row work as numba kernels (gmvq_cpu.py; the default) rather
    than the portable torch ops used on other devices; both compute the same.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        *,
        sigma_z: float = 0.1,
        gamma: float = 0.01,
        beta: float | None = 0.01,
        z_term: str = "kl",
        temperature_start: float = 1.0,
        temperature_end: float = 0.1,
        temperature_anneal_steps: int = 10_000,
        noise_scale: float = 1.0,
        learn_dim_weights: bool = True,
        cpu_kernels: bool = True,
        **health,
    ):
        super().__init__(codebook_size, dim, **health)
        for name, value in (("sigma_z", sigma_z), ("temperature_start", temperature_start),
                            ("temperature_end", temperature_end)):  # fmt: skip
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number > 0, got {value}.")
        for name, value in (("gamma", gamma), ("beta", beta), ("noise_scale", noise_scale)):
            if value is not None and not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
        if z_term not in Z_TERMS:
            raise ValueError(f"z_term must be one of {', '.join(map(repr, Z_TERMS))}, got {z_term!r}.")
        steps = temperature_anneal_steps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
            raise ValueError(f"temperature_anneal_steps must be an integer >= 1, got {steps!r}.")
        self.sigma_z, self.gamma, self.beta, self.noise_scale = sigma_z, gamma, beta, noise_scale
        self.z_term, self.cpu_kernels = z_term, cpu_kernels
        self.temperature_start, self.temperature_end = temperature_start, temperature_end
        self.temperature_anneal_steps = int(steps)
        self.codebook = nn.Parameter(torch.randn(codebook_size, dim))  # the mixture means mu_c
        # Per-dimension precision weights w_d of the posterior logits (fixed at 1 when not learned).
        self.log_dim_weights = nn.Parameter(torch.zeros(dim), requires_grad=learn_dim_weights)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def temperature(self) -> float:
        """Gumbel-softmax temperature: start * (end / start) ** (step / anneal_steps), then end."""
        progress = min(self.step.item() / self.temperature_anneal_steps, 1.0)
        return self.temperature_start * (self.temperature_end / self.temperature_start) ** progress

    @property
    def elbo_beta(self) -> float:
        """The ELBO's (ALBO's) weight on KL(qbar_B || U) given gamma (docs/quantizers.md): per
        latent vector the ELBO charges L times our per-dimension "kl" term, L / (2 sigma_z^2)
        times our "distance" term, and the aggregated KL once."""
        per_vector = 1.0 if self.z_term == "kl" else 2 * self.sigma_z**2
        return self.gamma * per_vector / self.dim

    @property
    def effective_beta(self) -> float:
        return self.elbo_beta if self.beta is None else self.beta

    def _quantize(self, flat):
        if flat.shape[0] == 0:
            return flat.clone(), torch.empty(0, dtype=torch.long, device=flat.device), flat.new_zeros(())
        # Distances, logits (scaled by 1 / (2 sigma_z^2) = 50 by default) and the KL need float32's
        # precision and range: run the layer in at least float32, outside autocast.
        working = flat.float() if flat.dtype in (torch.float16, torch.bfloat16) else flat
        with torch.autocast(flat.device.type, enabled=False):
            quantized, codes, loss = self._mixture(working)
        return quantized.to(flat.dtype), codes, loss

    def _mixture(self, flat):
        noise, seed = None, 0
        if self.training:
            # The draws, in this order, from torch's global generators: a seed for the Gumbel
            # noise (CPU generator), then the Gaussian noise eps (N, D) when noise_scale > 0.
            seed = draw_gumbel_seed()
            if self.noise_scale > 0:
                noise = torch.randn_like(flat)
        mode = {"kl": Z_TERM_KL, "distance": Z_TERM_DISTANCE}[self.z_term]
        if self.z_term == "kl" and self.noise_scale == 0:
            mode = Z_TERM_NONE  # z is a point mass: no Gaussian KL (module docstring)
        settings = MixtureSettings(
            logit_scale=1 / (2 * self.sigma_z**2),
            z_term_mode=mode,
            kl_scale=self.noise_scale / (self.dim * self.sigma_z**2),
            inv_dim=1 / self.dim,
            gamma=self.gamma,
            beta=self.effective_beta,
            noise_scale=self.noise_scale,
            training=self.training,
            temperature=self.temperature,
            seed=seed,
            cpu_kernels=self.cpu_kernels,
        )
        if self.training:
            self.step += 1
        codebook, log_dim_weights = self.codebook.to(flat.dtype), self.log_dim_weights.to(flat.dtype)
        return MixtureLayer.apply(flat, codebook, log_dim_weights, noise, settings)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, z_term={self.z_term!r}, gamma={self.gamma}, "
            f"beta={self.effective_beta:.4g}{' (ELBO)' if self.beta is None else ''}, "
            f"noise_scale={self.noise_scale}, temperature={self.temperature:.3g}"
        )


# -- the Gumbel noise -------------------------------------------------------------------------------


def draw_gumbel_seed() -> int:
    """One draw from torch's global CPU generator: the seed of a training step's Gumbel noise."""
    return int(torch.randint(0, 2**63 - 1, (), dtype=torch.long))


def _as_int64(value) -> int:
    """A uint64 constant as the int64 with the same bits (torch has no uint64 arithmetic)."""
    value = int(value)
    return value - 2**64 if value >= 2**63 else value


def _shift_right(bits: torch.Tensor, count: int) -> torch.Tensor:
    """Logical right shift of int64 tensors read as uint64 (>> on int64 is arithmetic)."""
    return (bits >> count) & ((1 << (64 - count)) - 1)


def gumbel_noise(seed, first_row, rows, codebook_size, device=None, dtype=torch.float32) -> torch.Tensor:
    """(rows, K) Gumbel(0, 1) noise of rows first_row, first_row + 1, ...: g = -log(-log u) with
    u = (b + 0.5) / 2^23 in (0, 1), b the top 23 bits of SplitMix64's output number
    `row * K + code` for `seed` (gmvq_cpu.gumbel_uniform_bits; int64 products wrap like uint64)."""
    rows_index = torch.arange(first_row, first_row + rows, device=device)
    counters = rows_index[:, None] * codebook_size + torch.arange(codebook_size, device=device)  # (rows, K)
    state = seed + (counters + 1) * _as_int64(GOLDEN_GAMMA)
    state = (state ^ _shift_right(state, 30)) * _as_int64(MIX_1)
    state = (state ^ _shift_right(state, 27)) * _as_int64(MIX_2)
    state = state ^ _shift_right(state, 31)
    uniform = (_shift_right(state, 64 - UNIFORM_BITS).to(dtype) + 0.5) * 2.0**-UNIFORM_BITS
    return -torch.log(-torch.log(uniform))


# -- the layer --------------------------------------------------------------------------------------


def _z_terms(raw, settings):
    """(k_c, dk_c / dd_c) per entry from raw = ||z - mu_c||^2 before its clamp at 0."""
    distance = raw.clamp(min=0)
    if settings.z_term_mode == Z_TERM_KL:  # 0.5 (rho - 1 - log rho), rho = s d / (L sigma_z^2)
        ratio = settings.kl_scale * distance
        clamped = ratio.clamp(min=RATIO_FLOOR)
        slopes = torch.where(ratio >= RATIO_FLOOR, 0.5 * (1 - 1 / clamped) * settings.kl_scale, 0.0)
        return 0.5 * (clamped - 1 - clamped.log()), slopes
    if settings.z_term_mode == Z_TERM_DISTANCE:  # d / L
        return distance * settings.inv_dim, torch.full_like(distance, settings.inv_dim)
    return torch.zeros_like(distance), torch.zeros_like(distance)


def _distances_and_logits(flat, products, weights, code_sq, code_weighted_sq, settings):
    num_codes = code_sq.shape[0]
    row_sq, row_weighted_sq = (flat * flat).sum(1), (flat * flat) @ weights  # (n,)
    raw = row_sq[:, None] - 2 * products[:, :num_codes] + code_sq  # ||z - mu_c||^2, (n, K)
    weighted = row_weighted_sq[:, None] - 2 * products[:, num_codes:] + code_weighted_sq  # sum_d w_d (.)^2
    return raw, -settings.logit_scale * weighted


def _soft_sample(logits, settings, first_row):
    """s = softmax((l + g) / tau), g the Gumbel noise of these rows."""
    noise = gumbel_noise(settings.seed, first_row, logits.shape[0], logits.shape[1], logits.device, logits.dtype)
    return ((logits + noise) / settings.temperature).softmax(1)


def torch_forward_rows(flat, products, weights, code_sq, code_weighted_sq, settings, first_row, soft, out):
    """gmvq_cpu.forward_rows in torch ops (any device), same arguments."""
    codes, z_terms, sigmas, posterior_sum = out
    raw, logits = _distances_and_logits(flat, products, weights, code_sq, code_weighted_sq, settings)
    posterior = logits.softmax(1)  # q(c | x), (n, K)
    z_values, _ = _z_terms(raw, settings)
    codes.copy_(logits.argmax(1))
    z_terms.copy_((posterior * z_values).sum(1))
    posterior_sum += posterior.sum(0)
    if settings.training:
        soft.copy_(_soft_sample(logits, settings, first_row))
        spreads = (soft * raw.clamp(min=0)).sum(1)  # sum_c s_c d_c
        sigmas.copy_((spreads * (settings.noise_scale * settings.inv_dim)).sqrt())


def torch_backward_rows(
    flat, products, soft_grads, weights, code_sq, code_weighted_sq, settings, first_row, z_term_grad,
    posterior_grads, grad_out, noise, sigmas, grad_flat, column_sums,
):  # fmt: skip
    """gmvq_cpu.backward_rows in torch ops (any device), same arguments."""
    raw, logits = _distances_and_logits(flat, products, weights, code_sq, code_weighted_sq, settings)
    posterior = logits.softmax(1)
    z_values, z_slopes = _z_terms(raw, settings)
    grad_posterior = posterior_grads + z_term_grad * z_values  # dloss/dq, (n, K)
    grad_logits = posterior * (grad_posterior - (posterior * grad_posterior).sum(1, keepdim=True))
    grad_distances = z_term_grad * posterior * z_slopes
    if settings.training:
        spread_grads = flat.new_zeros(flat.shape[0])  # dloss/dspread, sigma = sqrt(s spread / L)
        if noise is not None:
            along = (grad_out * noise).sum(1)
            scale = settings.noise_scale * settings.inv_dim / 2
            spread_grads = torch.where(sigmas > 0, along * scale / sigmas.clamp(min=torch.finfo(flat.dtype).tiny), 0.0)
        sample = _soft_sample(logits, settings, first_row)
        grad_sample = soft_grads + spread_grads[:, None] * raw.clamp(min=0)  # dloss/ds
        grad_logits += sample * (grad_sample - (sample * grad_sample).sum(1, keepdim=True)) / settings.temperature
        grad_distances += spread_grads[:, None] * sample
        soft_grads.copy_(sample)
    grad_distances = torch.where(raw >= 0, grad_distances, 0.0)  # the clamp at 0
    num_codes = code_sq.shape[0]
    products[:, :num_codes] = grad_distances
    products[:, num_codes:] = 2 * settings.logit_scale * grad_logits
    column_sums += products.sum(0)
    if grad_flat is not None:
        grad_flat.copy_(2 * flat * grad_distances.sum(1, keepdim=True))


def _block_rows(num_rows: int, num_codes: int):
    step = max(16, BLOCK_ENTRIES // num_codes)
    return [slice(start, min(start + step, num_rows)) for start in range(0, num_rows, step)]


class MixtureLayer(torch.autograd.Function):
    """(quantized, codes, loss) of GM-VQ for flat (N, D), codebook (K, D), log_dim_weights (D,),
    the Gaussian noise eps (N, D) or None, and `MixtureSettings` (the Gumbel noise's seed among
    them). Row block by row block; nothing N x K is kept for the backward pass, which recomputes
    the block's products and per-row work. With P = [z . mu_c | (w z) . mu_c] the per-row
    gradients G = [G_d | G_w] (dloss/dd and dloss/dP_w, from gmvq_cpu.backward_rows) give

        g_z  = 2 z sum_c G_d - 2 G_d mu + G_w (w mu)                        (d = |z|^2 - 2 z.mu + |mu|^2)
        g_mu = s^T g_out - 2 G_d^T z + 2 mu colsum(G_d) + w (G_w^T z - mu colsum(G_w))
        g_w  = sum_c mu_c (G_w^T z)_c - 0.5 sum_c colsum(G_w)_c mu_c^2,     g_log_w = w g_w

    plus, in eval mode, g_out added to the codes' rows of g_mu (quantized = mu[codes]). The
    logits' row term sum_d w_d z_d^2 gets the gradient sum_c dloss/dl_c = 0 (softmaxes' gradients
    sum to 0 over codes), left out."""

    @staticmethod
    def forward(ctx, flat, codebook, log_dim_weights, noise, settings):
        flat, codebook = flat.detach().contiguous(), codebook.detach().contiguous()
        weights = log_dim_weights.detach().exp()  # w, (D,)
        num_rows, num_codes = flat.shape[0], codebook.shape[0]
        stacked = torch.cat([codebook, codebook * weights])  # (2K, D): P = z stacked^T
        code_sq, code_weighted_sq = (codebook * codebook).sum(1), (codebook * codebook) @ weights  # (K,)
        on_cpu = settings.cpu_kernels and flat.device.type == "cpu"
        rows_forward = cpu_forward_rows if on_cpu else torch_forward_rows

        codes = torch.empty(num_rows, dtype=torch.long, device=flat.device)
        z_terms, sigmas = flat.new_empty(num_rows), flat.new_empty(num_rows)
        posterior_sum = flat.new_zeros(num_codes)
        mixture = flat.new_empty(flat.shape) if settings.training else None  # sum_c s_c mu_c
        blocks = _block_rows(num_rows, num_codes)
        products_buffer = flat.new_empty(blocks[0].stop, 2 * num_codes)
        soft_buffer = flat.new_empty(blocks[0].stop, num_codes) if settings.training else None
        for rows in blocks:
            count = rows.stop - rows.start
            products = torch.mm(flat[rows], stacked.t(), out=products_buffer[:count])
            soft = soft_buffer[:count] if settings.training else None
            out = (codes[rows], z_terms[rows], sigmas[rows], posterior_sum)
            rows_forward(flat[rows], products, weights, code_sq, code_weighted_sq, settings, rows.start, soft, out)
            if settings.training:
                torch.mm(soft, codebook, out=mixture[rows])

        aggregated = posterior_sum / num_rows  # qbar_B, (K,)
        aggregated_kl = math.log(num_codes) + (aggregated * aggregated.clamp(min=AGGREGATE_FLOOR).log()).sum()
        loss = settings.gamma * z_terms.mean() + settings.beta * aggregated_kl
        if not settings.training:
            quantized, sigmas = codebook[codes], None
        elif noise is None:
            quantized, sigmas = mixture, None
        else:  # sigma^2 = sum_c s_c sigma_c^2 = (s / L) sum_c s_c d_c
            quantized = mixture.addcmul_(sigmas[:, None], noise)
        ctx.settings = settings
        ctx.save_for_backward(flat, codebook, weights, noise, sigmas, aggregated, codes)
        ctx.mark_non_differentiable(codes)
        return quantized, codes, loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_quantized, _grad_codes, grad_loss):
        flat, codebook, weights, noise, sigmas, aggregated, codes = ctx.saved_tensors
        settings = ctx.settings
        num_rows, num_codes = flat.shape[0], codebook.shape[0]
        need_flat, need_codebook, need_weights = ctx.needs_input_grad[:3]
        grad_quantized = grad_quantized.contiguous()
        on_cpu = settings.cpu_kernels and flat.device.type == "cpu"
        rows_backward = cpu_backward_rows if on_cpu else torch_backward_rows

        # dloss/dq_nc through qbar: beta (log qbar_c + 1) / N (under the floor: log of the floor)
        grad_aggregated = aggregated.clamp(min=AGGREGATE_FLOOR).log() + (aggregated >= AGGREGATE_FLOOR).to(flat.dtype)
        posterior_grads = (settings.beta / num_rows) * grad_loss * grad_aggregated  # (K,)
        z_term_grad = settings.gamma * float(grad_loss) / num_rows  # dloss/dz_terms[n]

        stacked = torch.cat([codebook, codebook * weights])  # (2K, D)
        combine = torch.cat([-2 * codebook, codebook * weights])  # g_z = G combine + 2 z rowsum(G_d)
        code_sq, code_weighted_sq = (codebook * codebook).sum(1), (codebook * codebook) @ weights
        grad_flat = torch.empty_like(flat) if need_flat else None
        codes_times_z = flat.new_zeros(2 * num_codes, flat.shape[1])  # [G_d^T z ; G_w^T z]
        soft_times_grad = flat.new_zeros(codebook.shape)  # s^T g_out
        column_sums = flat.new_zeros(2 * num_codes)
        blocks = _block_rows(num_rows, num_codes)
        products_buffer = flat.new_empty(blocks[0].stop, 2 * num_codes)
        soft_buffer = flat.new_empty(blocks[0].stop, num_codes) if settings.training else None

        def rows_of(tensor, rows):
            return None if tensor is None else tensor[rows]

        for rows in blocks:
            count = rows.stop - rows.start
            products = torch.mm(flat[rows], stacked.t(), out=products_buffer[:count])
            soft_grads = None
            if settings.training:
                soft_grads = torch.mm(grad_quantized[rows], codebook.t(), out=soft_buffer[:count])  # g_out . mu_c
            rows_backward(
                flat[rows], products, soft_grads, weights, code_sq, code_weighted_sq, settings, rows.start,
                z_term_grad, posterior_grads, grad_quantized[rows] if settings.training else None,
                rows_of(noise, rows), rows_of(sigmas, rows), rows_of(grad_flat, rows), column_sums,
            )  # fmt: skip
            if need_flat:
                grad_flat[rows].addmm_(products, combine)
            if need_codebook or need_weights:
                codes_times_z.addmm_(products.t(), flat[rows])
                if settings.training:
                    soft_times_grad.addmm_(soft_grads.t(), grad_quantized[rows])

        grad_codebook = grad_log_dim_weights = None
        distance_by_z, weighted_by_z = codes_times_z[:num_codes], codes_times_z[num_codes:]
        distance_sums, weighted_sums = column_sums[:num_codes, None], column_sums[num_codes:, None]
        if need_codebook:
            grad_codebook = 2 * (codebook * distance_sums - distance_by_z)  # through d
            grad_codebook += weights * (weighted_by_z - codebook * weighted_sums)  # through the logits
            if settings.training:
                grad_codebook += soft_times_grad
            else:
                grad_codebook.index_add_(0, codes, grad_quantized)
        if need_weights:
            grad_weights = (codebook * weighted_by_z).sum(0) - 0.5 * (weighted_sums * codebook * codebook).sum(0)
            grad_log_dim_weights = grad_weights * weights
        return grad_flat, grad_codebook, grad_log_dim_weights, None, None
