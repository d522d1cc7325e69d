"""GM-VQ: Gaussian-mixture vector quantization with the aggregated-posterior ELBO (ALBO).

Yan, Wu, Shah, Liu 2024, "Gaussian Mixture Vector Quantization with Aggregated Categorical
Posterior", arXiv 2410.10180. No reference code is public; the readings below follow
../shared/QUANTIZERS.md and are listed, with the uncertain ones, in docs/quantizers.md.

Generative model: c ~ Uniform(K), z | c ~ N(mu_c, sigma_z^2 I); the codebook holds the means mu_c.

    logits    l_c = - sum_d w_d (zhat_d - mu_{c,d})^2 / (2 sigma_z^2)    w = exp(log_dim_weights)
    posterior q(c | x) = softmax(l)
    variance  sigma_c^2(x) = noise_scale * ||zhat - mu_c||^2 / L        (adaptive, not learned)
    training  s = GumbelSoftmax(l, tau),  z = sum_c s_c mu_c + sigma * eps,
              sigma^2 = sum_c s_c sigma_c^2(x),  tau annealed exponentially
    loss      gamma * E_c~q KL(N(mu_c, sigma_c^2 I) || N(mu_c, sigma_z^2 I)) / L
              + beta * KL(qbar_B || Uniform(K))
              qbar_B = mean of q(c | x) over every latent vector in the batch
              KL(qbar_B || U) = log K - H(qbar_B)
    eval      codes = argmax_c l_c,  z = mu_codes   (deterministic)

`codes` is the argmax of the posterior in both modes; there is no commitment loss and no EMA: the
posterior-weighted term sends a gradient to every codeword. With sigma_c^2 = d_c / L (noise_scale
1) the z term is 0.5 (r - 1 - log r) per dimension, r = ||zhat - mu_c||^2 / (L sigma_z^2).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import BaseQuantizer


class GaussianMixtureQuantizer(BaseQuantizer):
    def __init__(
        self,
        codebook_size: int,
        dim: int,
        *,
        sigma_z: float = 0.1,
        gamma: float = 0.01,
        beta: float = 0.01,
        temperature_start: float = 1.0,
        temperature_end: float = 0.1,
        temperature_anneal_steps: int = 10_000,
        noise_scale: float = 1.0,
        learn_dim_weights: bool = True,
        **health,
    ):
        super().__init__(codebook_size, dim, **health)
        for name, value in (("sigma_z", sigma_z), ("temperature_start", temperature_start), ("temperature_end", temperature_end)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}.")
        for name, value in (("gamma", gamma), ("beta", beta), ("noise_scale", noise_scale)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        if temperature_anneal_steps < 1:
            raise ValueError(f"temperature_anneal_steps must be >= 1, got {temperature_anneal_steps}.")
        self.sigma_z, self.gamma, self.beta, self.noise_scale = sigma_z, gamma, beta, noise_scale
        self.temperature_start, self.temperature_end = temperature_start, temperature_end
        self.temperature_anneal_steps = temperature_anneal_steps
        self.codebook = nn.Parameter(torch.randn(codebook_size, dim))  # the mixture means mu_c
        # Per-dimension precision weights w_d of the posterior logits (fixed at 1 when not learned).
        self.log_dim_weights = nn.Parameter(torch.zeros(dim), requires_grad=learn_dim_weights)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def temperature(self) -> float:
        """Gumbel-softmax temperature: start * (end / start) ** (step / anneal_steps), then end."""
        progress = min(self.step.item() / self.temperature_anneal_steps, 1.0)
        return self.temperature_start * (self.temperature_end / self.temperature_start) ** progress

    def _quantize(self, flat):
        means = self.codebook.to(flat.dtype)
        weights = self.log_dim_weights.exp().to(flat.dtype)  # (D,)
        # ||zhat - mu_c||^2 and its w-weighted form, each with one matmul.  (N, K)
        sq_dist = ((flat * flat).sum(1, keepdim=True) - 2 * flat @ means.t() + (means * means).sum(1)).clamp(min=0)
        weighted = (flat * flat) @ weights[:, None] - 2 * (flat * weights) @ means.t() + (means * means) @ weights
        logits = -weighted / (2 * self.sigma_z**2)  # (N, K)
        posterior = logits.softmax(-1)  # q(c | x)
        codes = logits.argmax(-1)

        if self.training:
            # Gumbel(0, 1) noise as -log(-log U): the same law as F.gumbel_softmax's -log(Exp(1)),
            # but uniform sampling is 1.5x faster than exponential_ on CPU.
            uniform = torch.rand_like(logits).clamp_(min=torch.finfo(logits.dtype).tiny)
            gumbel = -torch.log(-torch.log(uniform))
            soft = ((logits + gumbel) / self.temperature).softmax(-1)  # s = GumbelSoftmax(l, tau), (N, K)
            quantized = soft @ means
            if self.noise_scale > 0:
                variance = (soft * sq_dist).sum(1, keepdim=True) * (self.noise_scale / self.dim)  # (N, 1)
                quantized = quantized + variance.clamp(min=0).sqrt() * torch.randn_like(quantized)
            self.step += 1
        else:
            quantized = means[codes]

        # KL(N(mu_c, sigma_c^2 I) || N(mu_c, sigma_z^2 I)) per dimension, with sigma_c^2 = d_c / L:
        # 0.5 (r - 1 - log r), r = d_c / (L sigma_z^2). Its log barrier keeps zhat at a distance of
        # about sqrt(L) sigma_z from its codeword; a bare distance term collapses every codeword
        # and encoder output onto one point (measured: perplexity 1 on Fashion-MNIST).
        ratio = (sq_dist / (self.dim * self.sigma_z**2)).clamp(min=1e-6)
        z_kl = 0.5 * (ratio - 1 - ratio.log())  # (N, K)
        distance_term = (posterior * z_kl).sum(1).mean()
        aggregated = posterior.mean(0)  # qbar_B, (K,)
        kl_to_uniform = math.log(self.codebook_size) + (aggregated * aggregated.clamp(min=1e-12).log()).sum()
        loss = self.gamma * distance_term + self.beta * kl_to_uniform
        return quantized, codes, loss

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma}, beta={self.beta}, temperature={self.temperature:.3g}"
