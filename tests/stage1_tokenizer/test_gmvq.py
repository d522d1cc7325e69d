"""GM-VQ (stage1_tokenizer/quantizers/gmvq.py, docs/quantizers.md): the fast layer against a dense
reference written out with autograd, the z-term readings, the noise scale, the ELBO weight,
float32 under autocast, reproducible noise, the options' checks and the stage-one CLI's
annealing default."""

import math

import numpy as np
import pytest
import torch
from numba import njit

from stage1_tokenizer.quantizers import build_quantizer, gmvq
from stage1_tokenizer.quantizers.gmvq import draw_gumbel_seed, gumbel_noise
from stage1_tokenizer.quantizers.gmvq_cpu import fast_exp, fast_log


def dense_reference(
    z, codebook, log_dim_weights, *, sigma_z, gamma, beta, noise_scale, z_term, temperature, gumbel, eps, training
):
    """GM-VQ's equations with every N x K tensor formed and autograd for the gradients."""
    dim, num_codes = z.shape[1], codebook.shape[0]
    weights = log_dim_weights.exp()
    difference = z[:, None] - codebook[None]  # (N, K, D)
    distances = difference.square().sum(-1)  # d_c = ||z - mu_c||^2
    logits = -(weights * difference.square()).sum(-1) / (2 * sigma_z**2)
    posterior = logits.softmax(-1)
    if training:
        soft = ((logits + gumbel) / temperature).softmax(-1)
        quantized = soft @ codebook
        if noise_scale > 0:  # sigma^2 = sum_c s_c (noise_scale d_c / L)
            quantized = quantized + (noise_scale * (soft * distances).sum(1, keepdim=True) / dim).sqrt() * eps
    else:
        quantized = codebook[logits.argmax(-1)]
    if z_term == "distance":
        z_values = distances / dim
    elif noise_scale == 0:
        z_values = torch.zeros_like(distances)
    else:  # KL(N(mu_c, s d_c / L) || N(mu_c, sigma_z^2)) per dimension
        ratio = (noise_scale * distances / (dim * sigma_z**2)).clamp(min=1e-6)
        z_values = 0.5 * (ratio - 1 - ratio.log())
    aggregated = posterior.mean(0)
    aggregated_kl = math.log(num_codes) + (aggregated * aggregated.clamp(min=1e-12).log()).sum()
    loss = gamma * (posterior * z_values).sum(1).mean() + beta * aggregated_kl
    return quantized, logits.argmax(-1), loss


def build(codebook_size, dim, dtype=torch.float64, seed=1, scale=1.0, **options):
    options = {"kmeans_init": False, **options}
    q = build_quantizer("gmvq", codebook_size, dim, **options).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        q.codebook.copy_(scale * torch.randn(codebook_size, dim, generator=generator))
        q.log_dim_weights.copy_(0.3 * torch.randn(dim, generator=generator))
    return q


def layer_step(q, z, upstream, loss_weight=3.0, noise_seed=5):
    """(quantized, codes, loss, grad z, grad codebook, grad log_dim_weights) of one step."""
    leaf = z.clone().requires_grad_()
    q.zero_grad()
    torch.manual_seed(noise_seed)
    out = q(leaf)
    ((out.quantized * upstream).sum() + loss_weight * out.loss).backward()
    return out.quantized.detach(), out.codes, out.loss.detach(), leaf.grad, q.codebook.grad, q.log_dim_weights.grad


def reference_step(q, z, upstream, loss_weight=3.0, noise_seed=5):
    """The same step through `dense_reference`, with the noise the module draws: under
    torch.manual_seed(noise_seed), a Gumbel seed, then eps (N, D) if noise_scale > 0."""
    torch.manual_seed(noise_seed)
    gumbel_seed = draw_gumbel_seed()
    eps = torch.randn(z.shape, dtype=z.dtype) if q.noise_scale > 0 else None
    gumbel = gumbel_noise(gumbel_seed, 0, z.shape[0], q.codebook_size, dtype=z.dtype)
    leaf = z.clone().requires_grad_()
    codebook = q.codebook.detach().clone().requires_grad_()
    log_dim_weights = q.log_dim_weights.detach().clone().requires_grad_()
    quantized, codes, loss = dense_reference(
        leaf, codebook, log_dim_weights, sigma_z=q.sigma_z, gamma=q.gamma, beta=q.effective_beta,
        noise_scale=q.noise_scale, z_term=q.z_term, temperature=q.temperature, gumbel=gumbel, eps=eps,
        training=q.training,
    )  # fmt: skip
    ((quantized * upstream).sum() + loss_weight * loss).backward()
    return quantized.detach(), codes, loss.detach(), leaf.grad, codebook.grad, log_dim_weights.grad


def relative_error(value, reference):
    return ((value - reference).abs().max() / reference.abs().max().clamp(min=1e-30)).item()


@pytest.mark.parametrize("cpu_kernels", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "z_term, noise_scale", [("kl", 1.0), ("kl", 0.5), ("kl", 0.0), ("distance", 1.0), ("distance", 0.0)]
)
def test_layer_equals_the_dense_reference_in_float64(monkeypatch, cpu_kernels, training, z_term, noise_scale):
    """Loss, quantized, codes and the gradients w.r.t. z, the codebook and log_dim_weights of the
    blocked layer (numba kernels or portable torch ops) equal the dense autograd reference, given
    the same noise. Blocks of 40 rows (and 16-row chunks) so that 300 rows take 8 blocks, the last
    one partial; sigma_z = 0.7 keeps every code's posterior and sample weight non-negligible."""
    monkeypatch.setattr(gmvq, "BLOCK_ENTRIES", 40 * 24)
    q = build(24, 5, sigma_z=0.7, gamma=0.3, beta=0.7, z_term=z_term, noise_scale=noise_scale,
              cpu_kernels=cpu_kernels, temperature_start=0.6, temperature_end=0.6).train(training)  # fmt: skip
    generator = torch.Generator().manual_seed(2)
    z = torch.randn(300, 5, generator=generator, dtype=torch.float64)
    upstream = torch.randn(300, 5, generator=generator, dtype=torch.float64)
    expected = reference_step(q, z, upstream)
    got = layer_step(q, z, upstream)
    assert torch.equal(got[1], expected[1])  # codes
    names = ["quantized", "loss", "grad z", "grad codebook", "grad log w"]
    for name, value, reference in zip(names, got[:1] + got[2:], expected[:1] + expected[2:]):
        assert relative_error(value, reference) < 1e-12, name


def test_float32_layer_is_as_accurate_as_float32_autograd():
    """At the default scale (sigma_z = 0.1: logits are distances times 50) float32 rounding of the
    logits alone moves gradients by ~1e-3 relative; the layer's float32 error against the float64
    reference stays within 3x that of the dense reference computed in float32 (and codes agree)."""
    q64 = build(512, 64, scale=0.5)
    z = 0.5 * torch.randn(256, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    upstream = torch.randn(256, 64, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    exact = reference_step(q64, z, upstream)
    float32_reference = reference_step(q64.float(), z.float(), upstream.float())
    for cpu_kernels in (True, False):
        q32 = build(512, 64, dtype=torch.float32, scale=0.5, cpu_kernels=cpu_kernels)
        got = layer_step(q32, z.float(), upstream.float())
        assert torch.equal(got[1], exact[1])
        for index in (0, 2, 3, 4, 5):
            allowed = max(3 * relative_error(float32_reference[index].double(), exact[index]), 1e-6)
            assert relative_error(got[index].double(), exact[index]) <= allowed, (cpu_kernels, index)


@pytest.mark.parametrize("cpu_kernels", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_layer_passes_gradcheck(cpu_kernels, training):
    """The hand-written backward (float64, tiny case) equals finite differences of quantized and
    loss w.r.t. z, the codebook and log_dim_weights (fixed noise: the seed is reset per call)."""
    q = build(6, 3, sigma_z=0.8, gamma=0.4, beta=0.9, cpu_kernels=cpu_kernels, temperature_start=0.7,
              temperature_end=0.7).train(training)  # fmt: skip
    z = torch.randn(9, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64).requires_grad_()
    codebook = q.codebook.detach().clone().requires_grad_()
    log_dim_weights = q.log_dim_weights.detach().clone().requires_grad_()

    def layer(z, codebook, log_dim_weights):
        torch.manual_seed(0)
        out = torch.func.functional_call(q, {"codebook": codebook, "log_dim_weights": log_dim_weights}, (z,))
        return out.quantized, out.loss

    # nondet_tol: the numba kernels (fastmath) may sum in another order from one call to the next
    # (e.g. vector-loop peeling follows the arrays' alignment), so two backward passes can differ
    # in the last bits; a clean-clone run failed the reentrancy check on that alone
    assert torch.autograd.gradcheck(layer, (z, codebook, log_dim_weights), eps=1e-6, atol=1e-7, nondet_tol=1e-12)


def test_no_n_by_k_tensor_is_kept_for_backward():
    q = build(64, 8, dtype=torch.float32)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        q(torch.randn(500, 8))
    assert saved and max(saved) <= 500 * 8  # z, eps: N x D; nothing N x K (500 x 64)


# -- the z term: "kl" with the noise drawn, and "distance" (item by hand) ----------------------------

# Two codes mu_0 = (0, 0), mu_1 = (1, 0), z = (0.1, 0), sigma_z = 0.5, w = 1, L = 2: d = (0.01, 0.81),
# logits -d / (2 * 0.25) = (-0.02, -1.62), q = softmax = (0.8320184, 0.1679816).
POSTERIOR = (0.8320183851339245, 0.16798161486607555)


def tiny_quantizer(**options):
    q = build_quantizer(
        "gmvq", 2, 2, kmeans_init=False, sigma_z=0.5, gamma=1.0, beta=0.0, learn_dim_weights=False, **options
    )
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    return q.double().eval()


@pytest.mark.parametrize(
    "noise_scale, expected",
    [
        # rho_c = s d_c / (L sigma_z^2) = 2 s d_c; k_c = 0.5 (rho - 1 - ln rho)
        # s = 1: rho = (0.02, 1.62), k = (1.4660115, 0.0687869)
        (1.0, POSTERIOR[0] * 1.466011502714073 + POSTERIOR[1] * 0.06878692537785366),
        # s = 0.5: rho = (0.01, 0.81), k = (1.8075851, 0.0103605)
        (0.5, POSTERIOR[0] * 1.8075850929940454 + POSTERIOR[1] * 0.010360515657826294),
        # s = 0: z is a point mass, no Gaussian KL: the term is dropped
        (0.0, 0.0),
    ],
)
def test_kl_z_term_follows_the_noise_scale_hand_computed(noise_scale, expected):
    q = tiny_quantizer(noise_scale=noise_scale, z_term="kl")
    out = q(torch.tensor([[0.1, 0.0]], dtype=torch.float64))
    assert out.loss.item() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert out.codes.tolist() == [0]


def test_distance_z_term_hand_computed():
    # sum_c q_c d_c / L = (0.8320184 * 0.01 + 0.1679816 * 0.81) / 2, whatever the noise scale
    expected = (POSTERIOR[0] * 0.01 + POSTERIOR[1] * 0.81) / 2
    for noise_scale in (1.0, 0.0):
        q = tiny_quantizer(noise_scale=noise_scale, z_term="distance")
        assert q(torch.tensor([[0.1, 0.0]], dtype=torch.float64)).loss.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("noise_scale", [1.0, 0.5, 0.0])
def test_noise_drawn_has_the_variance_the_kl_charges(noise_scale):
    """With a one-hot sample (one code, far from the others) quantized = mu_c + sigma eps with
    sigma^2 = s d / L: the empirical variance per dimension matches s d / L, the variance of the
    q(z | x, c) whose KL the loss charges (exactly 0 with s = 0, where the KL term is 0)."""
    q = build_quantizer(
        "gmvq", 2, 4, kmeans_init=False, sigma_z=0.5, noise_scale=noise_scale, gamma=1.0, beta=0.0,
        learn_dim_weights=False, temperature_start=0.1, temperature_end=0.1,
    ).double().train()  # fmt: skip
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0, 0.0, 0.0], [50.0, 0.0, 0.0, 0.0]]))
    z = torch.tensor([[0.3, -0.2, 0.1, 0.2]], dtype=torch.float64).repeat(20000, 1)
    torch.manual_seed(0)
    out = q(z)
    distance = 0.09 + 0.04 + 0.01 + 0.04  # ||z - mu_0||^2
    variance = (out.quantized - q.codebook.detach()[0]).square().mean()
    assert variance.item() == pytest.approx(noise_scale * distance / 4, rel=0.02, abs=1e-30)
    if noise_scale > 0:  # the loss's z term: KL of that variance against sigma_z^2, per dimension
        ratio = noise_scale * distance / (4 * 0.25)
        assert out.loss.item() == pytest.approx(0.5 * (ratio - 1 - math.log(ratio)), rel=1e-9)
    else:
        assert out.loss.item() == 0.0


# -- the weights ---------------------------------------------------------------------------------


@pytest.mark.parametrize("z_term, per_vector", [("kl", 1.0), ("distance", 2 * 0.3**2)])
def test_beta_none_is_the_elbo_weight(z_term, per_vector):
    """beta=None: beta = gamma / L ("kl") or 2 sigma_z^2 gamma / L ("distance"); the loss is
    gamma * z term + that * KL(qbar || U)."""
    q = build(8, 4, sigma_z=0.3, gamma=0.2, beta=None, z_term=z_term).eval()
    assert q.effective_beta == pytest.approx(0.2 * per_vector / 4)
    z = torch.randn(50, 4, dtype=torch.float64)
    with_elbo_beta = q(z).loss
    q.beta = 0.2 * per_vector / 4
    assert q(z).loss.item() == pytest.approx(with_elbo_beta.item(), rel=1e-12)
    q.beta, q.gamma = 0.0, 0.0
    assert q(z).loss.item() == 0.0


def test_default_beta_is_64_times_the_elbo_weight_at_the_recipe_shape():
    q = build_quantizer("gmvq", 512, 64)
    assert (q.gamma, q.beta, q.elbo_beta) == (0.01, 0.01, 0.01 / 64)  # "GM-VQ + Entropy"
    assert build_quantizer("gmvq", 512, 64, beta=None).effective_beta == 0.01 / 64  # "GM-VQ"


# -- precision, noise, options --------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("half_dtype, step", [(torch.bfloat16, 2**-7), (torch.float16, 2**-10)])
def test_half_precision_autocast_computes_in_float32(training, half_dtype, step):
    """Under bf16 (or fp16) autocast with a bf16 (fp16) input, the layer runs in float32 on the
    input's values: codes equal and the loss equals (tolerance: rel 1e-6) the float32 computation
    on input.float(); quantized is that result rounded to the input's dtype (tolerance: one step
    of that dtype, rel 2^-7 for bf16, 2^-10 for fp16: BLAS's float32 products can differ in the
    last bit between buffers, which flips a rounding); the loss's gradient w.r.t. the codebook
    agrees to 1e-5 relative. (Computed in bf16, the logits - distances times 50 - would carry
    errors of up to 0.4% of their size.)"""
    q = build(64, 16, dtype=torch.float32, temperature_start=0.5, temperature_end=0.5).train(training)
    half = torch.randn(512, 16, generator=torch.Generator().manual_seed(7)).to(half_dtype)
    results = []
    for autocast in (True, False):
        q.zero_grad()
        torch.manual_seed(3)
        with torch.autocast("cpu", dtype=half_dtype, enabled=autocast):
            out = q(half if autocast else half.float())
        out.loss.backward()  # (quantized's gradient reaches the layer rounded to the half dtype)
        results.append((out, q.codebook.grad.clone()))
    (low, low_grad), (full, full_grad) = results
    assert low.quantized.dtype == half_dtype and low.loss.dtype == torch.float32
    assert torch.equal(low.codes, full.codes)
    assert low.loss.item() == pytest.approx(full.loss.item(), rel=1e-6)
    assert torch.allclose(low.quantized.float(), full.quantized, rtol=step, atol=1e-6)
    assert relative_error(low_grad, full_grad) < 1e-5


@pytest.mark.parametrize("training", [True, False])
def test_float32_input_under_autocast_is_the_float32_computation(training):
    """A float32 input under bf16 autocast (the layer's products would otherwise run in bf16)
    gives exactly the result without autocast, in float32."""
    q = build(64, 16, dtype=torch.float32, temperature_start=0.5, temperature_end=0.5).train(training)
    z = torch.randn(512, 16, generator=torch.Generator().manual_seed(8))
    results = []
    for autocast in (True, False):
        torch.manual_seed(3)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = q(z)
        results.append(out)
    low, full = results
    assert low.quantized.dtype == torch.float32
    for name in ("quantized", "codes", "loss"):
        assert torch.equal(getattr(low, name), getattr(full, name)), name


def test_training_noise_is_reproducible_and_independent_of_threads():
    """The draws come from torch's global generator (a Gumbel seed, then eps): the same seed
    gives the same step, another seed another one, and 1 or 2 threads the same draws."""
    q = build(128, 8, dtype=torch.float32, temperature_start=0.5, temperature_end=0.5).train()
    z = torch.randn(3000, 8)

    def step(seed):
        torch.manual_seed(seed)
        out = q(z)
        return out.quantized, out.codes, out.loss

    first, again, other = step(1), step(1), step(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = step(1)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single[1], first[1])  # (BLAS's float32 products may differ in the last bit)
    assert torch.allclose(single[0], first[0], rtol=1e-5, atol=1e-6)
    assert single[2].item() == pytest.approx(first[2].item(), rel=1e-5)


def test_gumbel_noise_is_standard_gumbel_and_depends_on_row_and_code():
    noise = gumbel_noise(12345, 0, 500, 512, dtype=torch.float64)  # 256,000 draws
    assert noise.mean().item() == pytest.approx(0.5772156649, abs=0.01)  # Euler's constant
    assert noise.var().item() == pytest.approx(math.pi**2 / 6, rel=0.02)
    assert (noise <= 0).double().mean().item() == pytest.approx(math.exp(-1), abs=0.003)  # CDF exp(-exp(-g))
    assert abs(torch.corrcoef(torch.stack([noise[:, :-1].flatten(), noise[:, 1:].flatten()]))[0, 1].item()) < 0.01
    # rows are addressed globally: a block starting at row 200 continues the same stream
    assert torch.equal(gumbel_noise(12345, 200, 10, 512, dtype=torch.float64), noise[200:210])
    assert not torch.equal(gumbel_noise(54321, 0, 10, 512, dtype=torch.float64), noise[:10])


@njit(fastmath=True, error_model="numpy")  # as the kernels compile
def _exp_and_log(x, exps, logs):  # the kernels' float32 exp and log, in a vectorised loop
    for i in range(x.shape[0]):
        exps[i] = fast_exp(-x[i])
        logs[i] = fast_log(x[i])


def test_kernels_float32_exp_and_log_are_within_a_few_ulp():
    spread, wide = np.linspace(1e-6, 100, 200001), np.exp(np.linspace(-80, 80, 20001))
    x = np.concatenate([spread, wide, 1 + np.linspace(-1e-3, 1e-3, 2001)]).astype(np.float32)
    exps, logs = np.empty_like(x), np.empty_like(x)
    _exp_and_log(x, exps, logs)
    exact_exp, exact_log = np.exp(-x.astype(np.float64)), np.log(x.astype(np.float64))
    in_range = x <= 87  # exp(-x) >= e^-87, a normal float32
    ulps = np.abs(exps - exact_exp) / np.spacing(exact_exp.astype(np.float32))
    assert ulps[in_range].max() <= 2
    assert (exps[x > 87] == 0).all()  # under e^-87: flushed to 0
    log_spacing = np.spacing(np.abs(exact_log).astype(np.float32))  # (at x = 1 exactly, log is 0 and exact)
    log_ulps = np.abs(logs - exact_log) / log_spacing.clip(min=np.spacing(np.float32(1)) * 2**-24)
    assert log_ulps.max() <= 3


def test_options_are_checked():
    for steps in (0, -1, 2.5, True, "10"):
        with pytest.raises(ValueError, match=f"temperature_anneal_steps must be an integer >= 1, got {steps!r}"):
            build_quantizer("gmvq", 8, 4, temperature_anneal_steps=steps)
    assert build_quantizer("gmvq", 8, 4, temperature_anneal_steps=np.int64(5)).temperature_anneal_steps == 5
    with pytest.raises(ValueError, match="z_term must be one of 'kl', 'distance', got 'bare'"):
        build_quantizer("gmvq", 8, 4, z_term="bare")
    with pytest.raises(ValueError, match="beta must be a finite number >= 0, got -1"):
        build_quantizer("gmvq", 8, 4, beta=-1)
    with pytest.raises(ValueError, match="noise_scale must be a finite number >= 0, got nan"):
        build_quantizer("gmvq", 8, 4, noise_scale=float("nan"))


def test_stage_one_cli_anneals_the_temperature_over_the_run():
    """docs/quantizers.md: the stage-one CLI sets temperature_anneal_steps to the run's max_steps
    unless the recipe's quantizer_options give it; other quantizers get no such option."""
    from stage1_tokenizer.common.training import TrainingConfig
    from stage1_tokenizer.train import build_config

    training = TrainingConfig(max_steps=123)
    fields = {"quantizer": "gmvq", "codebook_size": 16}
    assert build_config(fields, training).quantizer_options == {"temperature_anneal_steps": 123}
    given = {**fields, "quantizer_options": {"temperature_anneal_steps": 7, "gamma": 0.1}}
    assert build_config(given, training).quantizer_options == {"temperature_anneal_steps": 7, "gamma": 0.1}
    assert build_config({"quantizer": "vq", "codebook_size": 16}, training).quantizer_options == {}


def test_empty_batch():
    for training in (True, False):
        q = build(16, 4, dtype=torch.float32).train(training)
        out = q(torch.randn(0, 4))
        assert out.quantized.shape == (0, 4) and out.codes.shape == (0,) and out.loss.item() == 0.0
