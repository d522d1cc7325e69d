"""Value checks of the four quantizers against their papers' equations (docs/quantizers.md)."""

import math

import pytest
import torch
import torch.nn.functional as F

from stage1_tokenizer.quantizers import CodebookUsage, build_quantizer, kmeans
from stage1_tokenizer.quantizers.scq import project_to_simplex

KINDS = ["vq", "vq-ema", "gmvq", "scq"]


def brute_force_nearest(z, codebook):
    return torch.stack([((codebook - v) ** 2).sum(1).argmin() for v in z.reshape(-1, z.shape[-1])]).reshape(z.shape[:-1])


@pytest.mark.parametrize("kind", ["vq", "vq-ema"])
def test_vq_codes_are_brute_force_nearest_and_forward_value_is_codeword(kind):
    q = build_quantizer(kind, 16, 4, kmeans_init=False).eval()
    z = torch.randn(3, 5, 4)
    out = q(z)
    assert torch.equal(out.codes, brute_force_nearest(z, q.codebook.detach()))
    assert torch.allclose(out.quantized, q.codebook.detach()[out.codes], atol=1e-6)


@pytest.mark.parametrize("kind", ["vq", "vq-ema"])
def test_vq_gradient_is_straight_through(kind):
    q = build_quantizer(kind, 8, 3, kmeans_init=False).eval()
    z = torch.randn(10, 3, requires_grad=True)
    upstream = torch.randn(10, 3)
    (q(z).quantized * upstream).sum().backward()
    assert torch.equal(z.grad, upstream)  # d quantized / d z = identity


def test_vq_loss_matches_hand_computed_formula():
    q = build_quantizer("vq", 2, 2, kmeans_init=False, beta=0.25)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0], [2.0, 2.0]]))
    z = torch.tensor([[0.5, -0.5], [1.5, 3.0]], requires_grad=True)
    out = q(z)
    # nearest: row 0 -> code 0 (dist 0.5), row 1 -> code 1 (dist 0.25 + 1 = 1.25)
    assert out.codes.tolist() == [0, 1]
    mse = (0.25 + 0.25 + 0.25 + 1.0) / 4  # mean over the 4 elements of (z - e)^2
    assert out.loss.item() == pytest.approx(mse + 0.25 * mse)
    out.loss.backward()
    # gradient of beta * mean (z - sg[e])^2 with respect to z: 2 beta (z - e) / 4
    expected = 2 * 0.25 * (z.detach() - torch.tensor([[0.0, 0.0], [2.0, 2.0]])) / 4
    assert torch.allclose(z.grad, expected)
    # the codebook term moves codewords towards z with weight 1 (not beta): 2 (e - z) / 4
    assert torch.allclose(q.codebook.grad, 2 * (torch.tensor([[0.0, 0.0], [2.0, 2.0]]) - z.detach()) / 4)


def test_ema_step_matches_hand_computed_update():
    decay, eps = 0.9, 0.1
    q = build_quantizer("vq-ema", 2, 1, kmeans_init=False, decay=decay, eps=eps, beta=0.5)
    q._set_codewords(torch.tensor([0, 1]), torch.tensor([[0.0], [10.0]]))  # counts 1, sums = codewords
    z = torch.tensor([[1.0], [2.0], [9.0]])
    out = q.train()(z)
    assert out.codes.tolist() == [0, 0, 1]
    # EMA counts and sums: N = 0.9 * 1 + 0.1 * n,  m = 0.9 * e + 0.1 * s
    counts = torch.tensor([0.9 + 0.1 * 2, 0.9 + 0.1 * 1])
    sums = torch.tensor([0.9 * 0.0 + 0.1 * 3.0, 0.9 * 10.0 + 0.1 * 9.0])
    total = counts.sum()
    smoothed = (counts + eps) / (total + 2 * eps) * total
    assert torch.allclose(q.ema_count, counts)
    assert torch.allclose(q.codebook.squeeze(1), sums / smoothed)
    # the loss is the commitment term alone, on the codewords used in this forward pass
    assert out.loss.item() == pytest.approx(0.5 * ((1 - 0) ** 2 + (2 - 0) ** 2 + (9 - 10) ** 2) / 3)
    # no update in eval mode
    before = q.codebook.clone()
    q.eval()(z)
    assert torch.equal(q.codebook, before)


def test_simplex_projection_matches_definition_and_sparsemax_jacobian():
    values = torch.randn(50, 7, dtype=torch.double, requires_grad=True)
    weights = project_to_simplex(values)
    assert (weights >= 0).all() and torch.allclose(weights.sum(1), torch.ones(50, dtype=torch.double))
    # optimality: the projection is no farther from v than random points of the simplex
    for _ in range(20):
        other = torch.distributions.Dirichlet(torch.ones(7)).sample((50,)).double()
        assert ((values - weights) ** 2).sum(1).le(((values - other) ** 2).sum(1) + 1e-12).all()
    upstream = torch.randn(50, 7, dtype=torch.double)
    (weights * upstream).sum().backward()
    support = (weights > 0).double()
    mean_on_support = (upstream * support).sum(1, keepdim=True) / support.sum(1, keepdim=True)
    assert torch.allclose(values.grad, support * (upstream - mean_on_support))


def scq_weights_reference(z, codebook, lam):
    """The scalable SCQ layer solved directly with the K x K system (float64)."""
    codes = brute_force_nearest(z, codebook)
    onehot = F.one_hot(codes, codebook.shape[0]).double()
    system = codebook @ codebook.t() + lam * torch.eye(codebook.shape[0], dtype=torch.double)
    relaxed = torch.linalg.solve(system, (z @ codebook.t() + lam * onehot).t()).t()
    return project_to_simplex(relaxed), codes


@pytest.mark.parametrize("cpu_kernels", [True, False])
def test_scq_output_is_convex_and_closer_than_vq(cpu_kernels):
    q = build_quantizer("scq", 32, 6, kmeans_init=False, lam=0.5, cpu_kernels=cpu_kernels).double().eval()
    z = torch.randn(400, 6, dtype=torch.double)
    out = q(z)
    codebook = q.codebook.detach()
    vq_codes = brute_force_nearest(z, codebook)
    vq_dist = ((z - codebook[vq_codes]) ** 2).sum(1)
    out_dist = ((z - out.quantized) ** 2).sum(1)
    assert (out_dist <= vq_dist + 1e-9).all()
    assert (out_dist < vq_dist - 1e-6).float().mean() > 0.5  # and strictly closer for most vectors
    # in the convex hull: the output is C w for some w on the simplex; the relaxed solution's
    # projection W gives out = e_vq + t (C W - e_vq) with t in [0, 1]
    weights, ref_codes = scq_weights_reference(z, codebook, 0.5)
    convex = weights @ codebook
    direction = convex - codebook[ref_codes]
    step = ((out.quantized - codebook[ref_codes]) * direction).sum(1) / (direction**2).sum(1).clamp(min=1e-30)
    assert ((step >= -1e-9) & (step <= 1 + 1e-9)).all()
    assert torch.allclose(out.quantized, codebook[ref_codes] + step[:, None] * direction, atol=1e-9)
    assert torch.equal(out.codes, ref_codes)  # argmax weight is the nearest codeword here


def test_scq_support_escalation_is_exact():
    """support_size=2 forces most rows through the larger rounds; the result must not change."""
    z = torch.randn(300, 5, dtype=torch.double)
    small = build_quantizer("scq", 24, 5, kmeans_init=False, support_size=2, cpu_kernels=False).double().eval()
    large = build_quantizer("scq", 24, 5, kmeans_init=False, support_size=24, cpu_kernels=False).double().eval()
    large.load_state_dict(small.state_dict())
    assert torch.allclose(small(z).quantized, large(z).quantized, atol=1e-12)


def test_scq_tends_to_vq_as_lambda_grows():
    z = torch.randn(200, 4)
    distances = []
    for lam in (0.1, 10.0, 1e3, 1e6):
        q = build_quantizer("scq", 16, 4, kmeans_init=False, lam=lam).eval()
        with torch.no_grad():
            q.codebook.copy_(torch.randn(16, 4, generator=torch.Generator().manual_seed(1)))
        out = q(z)
        distances.append((out.quantized - q.codebook.detach()[out.codes]).norm(dim=1).mean().item())
    assert distances == sorted(distances, reverse=True)
    assert distances[-1] < 1e-4 and distances[0] > 1e-2


def test_scq_gradients_reach_encoder_and_codebook():
    encoder = torch.nn.Linear(3, 4)
    q = build_quantizer("scq", 8, 4)
    out = q(encoder(torch.randn(64, 3)))
    (out.quantized.square().sum() + out.loss).backward()
    assert encoder.weight.grad.abs().sum() > 0
    assert q.codebook.grad.abs().sum() > 0


@pytest.mark.parametrize("cpu_kernels", [True, False])
def test_scq_straight_through_gives_z_the_identity_gradient_and_the_codebook_the_layers(cpu_kernels):
    generator = torch.Generator().manual_seed(4)
    z = torch.randn(64, 4, generator=generator, dtype=torch.double)
    upstream = torch.randn(64, 4, generator=generator, dtype=torch.double)
    gradients = {}
    for straight_through in (True, False):
        q = build_quantizer("scq", 8, 4, beta=0.0, straight_through=straight_through, cpu_kernels=cpu_kernels)
        q.double()
        q.train()(z)  # k-means init
        with torch.no_grad():
            q.codebook.copy_(torch.randn(8, 4, generator=torch.Generator().manual_seed(5), dtype=torch.double))
        leaf = z.clone().requires_grad_()
        out = q(leaf)
        (out.quantized * upstream).sum().backward()
        gradients[straight_through] = (out.quantized.detach(), leaf.grad, q.codebook.grad)
    (soft_st, z_grad_st, codebook_grad_st), (soft, z_grad, codebook_grad) = gradients[True], gradients[False]
    assert torch.equal(soft_st, soft)  # same forward value
    assert torch.equal(z_grad_st, upstream)  # beta=0: the identity, as VQ's straight-through
    assert not torch.allclose(z_grad, upstream, atol=1e-3)  # the relaxed layer's own Jacobian
    assert torch.allclose(codebook_grad_st, codebook_grad, atol=1e-12)  # through the layer, both ways


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_trains_under_bf16_autocast(kind):
    """`--mixed_precision bf16` runs the encoder under autocast: each quantizer must take it."""
    q = build_quantizer(kind, 32, 8).train()
    z = torch.randn(256, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(torch.nn.functional.linear(z, torch.eye(8)))  # a bf16 encoder output
    (out.quantized.float().square().mean() + out.loss).backward()
    assert out.quantized.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    assert z.grad.abs().sum() > 0
    if kind == "scq":  # its layer runs in float32: bf16 input gives the float32 result, rounded
        q.eval()
        half = torch.randn(64, 8).bfloat16()
        assert torch.equal(q(half).quantized, q(half.float()).quantized.bfloat16())


def test_gmvq_loss_finite_gradients_reach_means_and_variances_temperature_anneals():
    q = build_quantizer("gmvq", 16, 4, temperature_start=1.0, temperature_end=0.1, temperature_anneal_steps=10)
    encoder = torch.nn.Linear(3, 4)
    temperatures = []
    for _ in range(12):
        temperatures.append(q.temperature)
        out = q(encoder(torch.randn(64, 3)))
        assert torch.isfinite(out.loss)
        q.zero_grad()
        out.loss.backward() if _ else (out.quantized.square().sum() + out.loss).backward()
        if _ == 0:
            assert q.codebook.grad.abs().sum() > 0  # means
            assert q.log_dim_weights.grad.abs().sum() > 0  # per-dimension precisions of the posterior
            assert encoder.weight.grad.abs().sum() > 0
    assert temperatures[0] == pytest.approx(1.0)
    assert temperatures[5] == pytest.approx(1.0 * 0.1**0.5)
    assert temperatures[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(temperatures[:11], temperatures[1:11]))


def test_gmvq_loss_is_albo_terms():
    q = build_quantizer("gmvq", 3, 2, kmeans_init=False, gamma=0.7, beta=2.0, sigma_z=0.5, learn_dim_weights=False).eval()
    z = torch.randn(20, 2)
    out = q(z)
    means = q.codebook.detach()
    sq = ((z[:, None] - means[None]) ** 2).sum(-1)  # (N, K)
    posterior = (-sq / (2 * 0.5**2)).softmax(-1)
    aggregated = posterior.mean(0)
    kl = (aggregated * (aggregated * 3).log()).sum()
    ratio = sq / (2 * 0.5**2)  # d_c / (L sigma_z^2), L = 2
    z_kl = 0.5 * (ratio - 1 - ratio.log())  # KL(N(mu_c, d_c / L) || N(mu_c, sigma_z^2)) per dimension
    expected = 0.7 * (posterior * z_kl).sum(1).mean() + 2.0 * kl
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.equal(out.codes, sq.argmin(1))


def test_gmvq_evaluation_is_deterministic_and_hard():
    q = build_quantizer("gmvq", 16, 4)
    q(torch.randn(100, 4))  # k-means init, one training step
    q.eval()
    z = torch.randn(30, 4)
    first, second = q(z), q(z)
    assert torch.equal(first.quantized, second.quantized)
    assert torch.equal(first.quantized, q.codebook.detach()[first.codes])
    q.train()
    assert not torch.equal(q(z).quantized, q(z).quantized)  # training samples (Gumbel + noise)


@pytest.mark.parametrize("kind", KINDS)
def test_eval_forward_equals_decode_of_codes_for_hard_kinds_and_perplexity(kind):
    q = build_quantizer(kind, 8, 3)
    q(torch.randn(64, 3))
    q.eval()
    z = torch.randn(5, 7, 3)
    out = q(z)
    assert out.codes.shape == (5, 7) and out.codes.dtype == torch.long
    counts = torch.bincount(out.codes.reshape(-1), minlength=8).float()
    probs = counts / counts.sum()
    expected = math.exp(-(probs[probs > 0] * probs[probs > 0].log()).sum().item())
    assert out.perplexity.item() == pytest.approx(expected, rel=1e-5)
    if kind != "scq":  # scq's output is a convex combination, not one codeword
        assert torch.allclose(out.quantized, q.codebook.detach()[out.codes], atol=1e-6)


def test_kmeans_places_codewords_on_clusters():
    centers = torch.tensor([[10.0 * i, (-1) ** i * 5.0 * i] for i in range(6)])
    data = (centers[:, None] + 0.1 * torch.randn(6, 200, 2)).reshape(-1, 2)
    found = kmeans(data, 6, iters=10, generator=torch.Generator().manual_seed(0))
    distance = torch.cdist(centers, found).min(1).values
    assert (distance < 0.1).all()


@pytest.mark.parametrize("kind", KINDS)
def test_kmeans_init_on_first_training_batch(kind):
    centers = torch.randn(4, 3) * 10
    data = (centers[:, None] + 0.01 * torch.randn(4, 100, 3)).reshape(-1, 3)
    q = build_quantizer(kind, 4, 3)
    q.eval()(data)  # evaluation does not initialise
    assert not bool(q.initialized)
    q.train()(data)
    assert bool(q.initialized)
    assert (torch.cdist(centers, q.codebook.detach()).min(1).values < 0.1).all()


@pytest.mark.parametrize("kind", KINDS)
def test_dead_code_restart_recovers_a_collapsed_codebook(kind):
    q = build_quantizer(kind, 16, 2, kmeans_init=False, dead_code_steps=3)
    data = torch.randn(512, 2) * 3
    with torch.no_grad():  # collapse: every codeword far away except code 0, which sits on the data
        q._set_codewords(torch.arange(16), torch.full((16, 2), 100.0))
        q._set_codewords(torch.tensor([0]), torch.zeros(1, 2))
    usage = CodebookUsage(16)
    usage.update(q.eval()(data).codes)
    assert usage.fraction_used() == pytest.approx(1 / 16)
    q.train()
    for _ in range(4):
        q(data)
    usage = CodebookUsage(16)
    usage.update(q.eval()(data).codes)
    assert usage.fraction_used() > 0.8


def test_codebook_usage_counts_over_a_pass():
    usage = CodebookUsage(4)
    usage.update(torch.tensor([0, 0, 1]))
    usage.update(torch.tensor([[1]]))
    assert usage.fraction_used() == 0.5
    assert usage.perplexity() == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 3\]"):
        usage.update(torch.tensor([4]))


def test_bad_input_errors_name_the_value():
    with pytest.raises(ValueError, match="Unknown quantizer kind 'vqq'.*'vq', 'vq-ema', 'gmvq', 'scq'"):
        build_quantizer("vqq", 8, 4)
    with pytest.raises(ValueError, match="codebook_size must be an integer >= 2, got 1"):
        build_quantizer("vq", 1, 4)
    with pytest.raises(TypeError, match="does not take option.*decay"):
        build_quantizer("vq", 8, 4, decay=0.9)
    q = build_quantizer("vq", 8, 4)
    with pytest.raises(ValueError, match=r"dim=4, got shape \(2, 3, 5\).*permute"):
        q(torch.randn(2, 3, 5))
    bad = torch.randn(2, 4)
    bad[0, 1] = float("nan")
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match="1 NaN and 1 inf values out of 8"):
        q(bad)
    with pytest.raises(TypeError, match="float tensor"):
        q(torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="decay must lie in \\(0, 1\\), got 1.5"):
        build_quantizer("vq-ema", 8, 4, decay=1.5)
    with pytest.raises(ValueError, match="lam .* must be > 0, got 0"):
        build_quantizer("scq", 8, 4, lam=0)


def test_scq_sparse_backward_passes_gradcheck():
    """The hand-written sparse backward equals finite differences of the whole projection, with a
    support found in rounds of 3 entries (most rows need a second round)."""
    from stage1_tokenizer.quantizers.scq import (
        SparseSimplexCombination,
        simplex_support,
    )

    generator = torch.Generator().manual_seed(3)
    y = (0.3 * torch.randn(6, 4, generator=generator, dtype=torch.double)).requires_grad_()
    codebook = torch.randn(10, 4, generator=generator, dtype=torch.double).requires_grad_()
    vq_codes = torch.randint(10, (6,), generator=generator)

    def combination(y, codebook):
        row_starts, columns, weights, *_ = simplex_support(y.detach(), codebook.detach(), vq_codes, 3)
        return SparseSimplexCombination.apply(y, codebook, row_starts, columns, weights)

    # the support found equals the dense projection's
    dense_weights = project_to_simplex(y.detach() @ codebook.detach().t() + F.one_hot(vq_codes, 10).double())
    row_starts, columns, weights, *_ = simplex_support(y.detach(), codebook.detach(), vq_codes, 3)
    assert row_starts.diff().max() > 3
    sparse_weights = torch.sparse_csr_tensor(row_starts, columns, weights, (6, 10), check_invariants=True).to_dense()
    assert torch.allclose(sparse_weights, dense_weights, atol=1e-12)
    assert torch.autograd.gradcheck(combination, (y, codebook), eps=1e-7, atol=1e-6)


def scq_step(q, z, upstream):
    leaf = z.clone().requires_grad_()
    out = q(leaf)
    q.codebook.grad = None
    ((out.quantized * upstream).sum() + out.loss).backward()
    return out.quantized.detach(), out.codes, out.loss.detach(), leaf.grad, q.codebook.grad


@pytest.mark.parametrize(
    "codebook_size, dim, lam, straight_through",
    [(64, 6, 1.0, True), (64, 6, 1.0, False), (24, 5, 0.5, False), (37, 4, 0.02, False), (512, 16, 1.0, True)],
)
def test_scq_cpu_kernels_equal_the_portable_layer(codebook_size, dim, lam, straight_through):
    """Value, codes, loss and both gradients of the numba layer equal the torch one's, for K with
    32, 8 and 1 column groups and both gradients to z; supports reach 9 to 18 entries here, so the
    portable path needs its later rounds too."""
    generator = torch.Generator().manual_seed(codebook_size)
    z = torch.randn(600, dim, generator=generator, dtype=torch.double)
    upstream = torch.randn(600, dim, generator=generator, dtype=torch.double)
    results = []
    for cpu_kernels in (True, False):
        q = build_quantizer(
            "scq", codebook_size, dim, kmeans_init=False, lam=lam, straight_through=straight_through, cpu_kernels=cpu_kernels
        ).double()
        with torch.no_grad():
            q.codebook.copy_(0.8 * torch.randn(codebook_size, dim, generator=torch.Generator().manual_seed(1)))
        results.append(scq_step(q, z, upstream))
    for kernel_result, torch_result in zip(*results):
        assert torch.allclose(kernel_result, torch_result, rtol=1e-9, atol=1e-12)


def test_scq_takes_an_empty_batch():
    for cpu_kernels in (True, False):
        out = build_quantizer("scq", 16, 4, kmeans_init=False, cpu_kernels=cpu_kernels)(torch.randn(0, 4))
        assert out.quantized.shape == (0, 4) and out.codes.shape == (0,)


def test_scq_cpu_support_wider_than_its_storage_is_rerun(monkeypatch):
    from stage1_tokenizer.quantizers import scq_cpu

    generator = torch.Generator().manual_seed(7)
    residual, codebook = torch.randn(300, 4, generator=generator), torch.randn(48, 4, generator=generator)
    vq_codes = torch.randint(48, (300,), generator=generator)
    reference = scq_cpu.simplex_support_rows(residual, 0.3 * codebook, vq_codes)
    monkeypatch.setattr(scq_cpu, "SUPPORT_CAPACITY", 2)
    columns, weights, lengths = scq_cpu.simplex_support_rows(residual, 0.3 * codebook, vq_codes)
    assert lengths.max() > 2 and columns.shape[1] == lengths.max()
    assert torch.equal(lengths, reference[2])
    stored = torch.arange(int(lengths.max())) < lengths[:, None]  # the slots rows use
    assert torch.equal(columns[stored], reference[0][:, : stored.shape[1]][stored])
    assert torch.equal(weights[stored], reference[1][:, : stored.shape[1]][stored])


def test_scq_cpu_layer_passes_gradcheck():
    """The hand-written backward of the numba layer (line search, sparsemax, C W, y = r G^-1 and
    G's dependence on C) equals finite differences."""
    from stage1_tokenizer.quantizers.scq_cpu import CpuSoftConvexLayer

    generator = torch.Generator().manual_seed(11)
    flat = torch.randn(12, 4, generator=generator, dtype=torch.double).requires_grad_()
    codebook = torch.randn(16, 4, generator=generator, dtype=torch.double).requires_grad_()
    vq_codes = ((flat[:, None] - codebook[None]).square().sum(-1)).argmin(1)

    def layer(flat, codebook):
        gram_inverse = torch.linalg.inv(codebook.t() @ codebook + 0.3 * torch.eye(4, dtype=torch.double))
        return CpuSoftConvexLayer.apply(flat, codebook, vq_codes, codebook[vq_codes], gram_inverse)[0]

    assert torch.autograd.gradcheck(layer, (flat, codebook), eps=1e-7, atol=1e-6)


def test_scq_cpu_kernels_follow_torchs_thread_count():
    q = build_quantizer("scq", 64, 8, kmeans_init=False).double().eval()
    z = torch.randn(2000, 8, dtype=torch.double)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = q(z).quantized
        import numba

        assert numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert torch.allclose(q(z).quantized, single, atol=1e-12)


def test_simplex_projection_presorted_matches_sorting():
    values = torch.randn(40, 9).sort(dim=1, descending=True).values
    assert torch.equal(project_to_simplex(values, presorted=True), project_to_simplex(values))


def test_gmvq_training_samples_follow_the_posterior():
    """Gumbel-max: the argmax of the relaxed sample is distributed as q(c|x) (here 3 codes whose
    means are the unit vectors, so `quantized` is the relaxed sample itself)."""
    q = build_quantizer("gmvq", 3, 3, kmeans_init=False, noise_scale=0.0, learn_dim_weights=False, sigma_z=1.0)
    with torch.no_grad():
        q.codebook.copy_(torch.eye(3))
    z = torch.tensor([[0.8, 0.3, -0.2]]).repeat(40000, 1)
    posterior = (-((z[:1, None] - torch.eye(3)[None]) ** 2).sum(-1) / 2).softmax(-1)[0]
    samples = q.train()(z).quantized.argmax(-1)
    frequencies = torch.bincount(samples, minlength=3).float() / len(samples)
    assert torch.allclose(frequencies, posterior, atol=0.01), (frequencies, posterior)
