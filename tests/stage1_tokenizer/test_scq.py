"""SCQ's variants (docs/quantizers.md): the paper's layer (line_search=False, straight_through=False)
against a dense reference written from its definition, its two implementations (numba kernels on
CPU, portable torch ops) against each other, normalised inputs, and option checks."""

import copy

import pytest
import torch
import torch.nn.functional as F

from stage1_tokenizer.quantizers import build_quantizer

PAPER = {"line_search": False, "straight_through": False}  # "scq (paper)"


def project_onto_simplex(values):
    """Euclidean projection of each row onto the probability simplex, by sorting (Duchi et al.
    2008); autograd through it gives the sparsemax Jacobian."""
    sorted_values = values.sort(dim=-1, descending=True).values  # (N, K)
    sums_minus_one = sorted_values.cumsum(-1) - 1
    ranks = torch.arange(1, values.shape[-1] + 1, dtype=values.dtype)
    support_size = (sorted_values - sums_minus_one / ranks > 0).sum(-1, keepdim=True)  # rho, (N, 1)
    threshold = sums_minus_one.gather(-1, support_size - 1) / support_size  # tau, (N, 1)
    return (values - threshold).clamp(min=0)


def paper_layer_reference(z, codebook, lam, beta):
    """The paper's scalable layer written densely: P from the K x K system, W its projection,
    output C W, codes argmax P; plus our loss (VQ's terms). Autograd gives its exact gradient."""
    num_codes = codebook.shape[0]
    vq_codes = ((z.detach()[:, None] - codebook.detach()[None]) ** 2).sum(-1).argmin(1)  # (N,)
    vq_assignment = F.one_hot(vq_codes, num_codes).to(z.dtype)  # P_vq, (N, K)
    system = codebook @ codebook.t() + lam * torch.eye(num_codes, dtype=z.dtype)  # C^T C + lam I_K
    relaxed = torch.linalg.solve(system, (z @ codebook.t() + lam * vq_assignment).t()).t()  # P, (N, K)
    weights = project_onto_simplex(relaxed)  # W, (N, K)
    vq_chosen = codebook[vq_codes]  # e_vq, (N, D)
    loss = F.mse_loss(vq_chosen, z.detach()) + beta * F.mse_loss(z, vq_chosen.detach())
    return weights @ codebook, relaxed.argmax(1), loss, weights


def stored_codebook(q):
    """The codebook parameter the optimiser updates (with normalize=True, the rows before scaling)."""
    (parameter,) = q.parameters()
    return parameter


def training_step(q, z, upstream):
    """Value, codes, loss, and the gradients to z and to the stored codebook of
    (quantized * upstream).sum() + loss."""
    leaf = z.clone().requires_grad_()
    out = q(leaf)
    stored_codebook(q).grad = None
    ((out.quantized * upstream).sum() + out.loss).backward()
    return out.quantized.detach(), out.codes, out.loss.detach(), leaf.grad, stored_codebook(q).grad


def random_problem(num_codes, dim, seed, rows=500):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, dim, generator=generator, dtype=torch.double)
    upstream = torch.randn(rows, dim, generator=generator, dtype=torch.double)
    codebook = 0.8 * torch.randn(num_codes, dim, generator=generator, dtype=torch.double)
    return z, upstream, codebook


def scq(num_codes, dim, codebook, **options):
    q = build_quantizer("scq", num_codes, dim, kmeans_init=False, **options).double()
    with torch.no_grad():
        stored_codebook(q).copy_(codebook)
    return q


def test_defaults_are_unchanged_ours_with_line_search_and_straight_through():
    q = build_quantizer("scq", 8, 4)
    assert (q.line_search, q.straight_through, q.normalize, q.lam, q.beta) == (True, True, False, 1.0, 0.25)
    assert "line_search=True, straight_through=True, normalize=False" in repr(q)


@pytest.mark.parametrize("cpu_kernels", [True, False])
def test_paper_layer_equals_dense_reference_in_value_codes_loss_and_both_gradients(cpu_kernels):
    """line_search=False, straight_through=False: the output is C W exactly, the codes argmax P,
    and z and the codebook get the gradient through the optimisation layer (the solve and the
    projection), equal to autograd through the dense K x K reference."""
    z, upstream, codebook = random_problem(48, 6, seed=1)
    q = scq(48, 6, codebook, lam=0.5, beta=0.25, cpu_kernels=cpu_kernels, **PAPER)
    value, codes, loss, z_grad, codebook_grad = training_step(q, z, upstream)

    leaf, reference_codebook = z.clone().requires_grad_(), codebook.clone().requires_grad_()
    expected, expected_codes, expected_loss, weights = paper_layer_reference(leaf, reference_codebook, 0.5, 0.25)
    ((expected * upstream).sum() + expected_loss).backward()
    assert (weights > 0).sum(1).float().mean() > 3  # a real mixture, not one codeword per row
    assert torch.allclose(value, expected, rtol=1e-9, atol=1e-12)
    assert torch.equal(codes, expected_codes)
    assert torch.allclose(loss, expected_loss, rtol=1e-12)
    assert torch.allclose(z_grad, leaf.grad, rtol=1e-8, atol=1e-10)
    assert torch.allclose(codebook_grad, reference_codebook.grad, rtol=1e-8, atol=1e-10)
    # not VQ's straight-through gradient: the layer's Jacobian plus the commitment term
    assert not torch.allclose(z_grad, upstream + 0.25 * 2 * (z - codebook[codes]) / z.numel(), atol=1e-3)


@pytest.mark.parametrize(
    "num_codes, dim, lam, options",
    [
        (64, 6, 1.0, PAPER),  # 32 column groups
        (24, 5, 0.5, PAPER),  # 8 groups
        (37, 4, 0.02, PAPER),  # 1 group; a small lam: wide supports, the portable path's later rounds
        (512, 16, 1.0, PAPER),
        (64, 6, 1.0, {"line_search": False, "straight_through": True}),
        (64, 8, 0.1, {**PAPER, "normalize": True}),
        (64, 8, 0.1, {"line_search": True, "straight_through": False, "normalize": True}),
    ],
)
def test_cpu_kernels_equal_the_portable_path(num_codes, dim, lam, options):
    """Value, codes, loss, and the gradients to z and to the codebook agree between the numba
    kernels (forward and hand-written backward) and the portable torch ops."""
    z, upstream, codebook = random_problem(num_codes, dim, seed=num_codes)
    results = [
        training_step(scq(num_codes, dim, codebook, lam=lam, cpu_kernels=cpu_kernels, **options), z, upstream)
        for cpu_kernels in (True, False)
    ]
    for name, kernel_result, torch_result in zip(("value", "codes", "loss", "z grad", "codebook grad"), *results):
        assert torch.allclose(kernel_result, torch_result, rtol=1e-9, atol=1e-12), name


@pytest.mark.parametrize("cpu_kernels", [True, False])
@pytest.mark.parametrize("normalize", [False, True])
def test_paper_layer_passes_gradcheck(cpu_kernels, normalize):
    """Finite differences (float64) of the quantized output with respect to z and to the stored
    codebook, through the whole module. (Not of the loss: its stop-gradients are by design not
    derivatives; the loss's gradient is checked against the dense reference above.)"""
    generator = torch.Generator().manual_seed(5)
    z = torch.randn(12, 4, generator=generator, dtype=torch.double).requires_grad_()
    codebook = torch.randn(16, 4, generator=generator, dtype=torch.double).requires_grad_()
    q = scq(16, 4, codebook.detach(), lam=0.3, normalize=normalize, cpu_kernels=cpu_kernels, **PAPER)
    name = "parametrizations.codebook.original" if normalize else "codebook"

    def module(z, codebook):
        return torch.func.functional_call(q, {name: codebook}, (z,)).quantized

    assert torch.autograd.gradcheck(module, (z, codebook), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("cpu_kernels", [True, False])
def test_straight_through_with_the_paper_output_gives_z_the_identity_and_the_codebook_the_layers(cpu_kernels):
    z, upstream, codebook = random_problem(32, 5, seed=2)
    paper = training_step(scq(32, 5, codebook, beta=0.0, cpu_kernels=cpu_kernels, **PAPER), z, upstream)
    straight = training_step(
        scq(32, 5, codebook, beta=0.0, line_search=False, straight_through=True, cpu_kernels=cpu_kernels), z, upstream
    )
    assert torch.equal(straight[0], paper[0]) and torch.equal(straight[1], paper[1])
    assert torch.equal(straight[3], upstream)  # beta=0: exactly the identity
    assert torch.allclose(straight[4], paper[4], atol=1e-12)  # the codebook's gradient is the layer's either way


def test_line_search_output_is_never_farther_than_vq_and_the_paper_output_is_C_W():
    z, _, codebook = random_problem(48, 6, seed=3)
    searched = scq(48, 6, codebook, lam=0.5).eval()(z)
    paper = scq(48, 6, codebook, lam=0.5, **PAPER).eval()(z)
    expected, expected_codes, _, _ = paper_layer_reference(z, codebook, 0.5, 0.25)
    assert torch.allclose(paper.quantized, expected, atol=1e-12) and torch.equal(paper.codes, expected_codes)
    vq_distance = (z - codebook[expected_codes]).square().sum(1)
    assert ((z - searched.quantized).square().sum(1) <= vq_distance + 1e-12).all()
    assert not torch.allclose(searched.quantized, paper.quantized, atol=1e-6)  # they are different layers


@pytest.mark.parametrize("cpu_kernels", [True, False])
def test_normalize_runs_the_layer_on_unit_vectors_and_codebook_reads_as_unit_rows(cpu_kernels):
    z, upstream, codebook = random_problem(32, 6, seed=4)
    q = scq(32, 6, 3 * codebook, lam=0.1, normalize=True, cpu_kernels=cpu_kernels, **PAPER)
    assert torch.allclose(q.codebook.norm(dim=1), torch.ones(32, dtype=torch.double))
    out = q.eval()(3 * z)
    # the same layer, unnormalised, on the unit vectors
    plain = scq(32, 6, F.normalize(codebook, dim=1), lam=0.1, cpu_kernels=cpu_kernels, **PAPER).eval()
    expected = plain(F.normalize(z, dim=1))
    assert torch.allclose(out.quantized, expected.quantized, atol=1e-12)
    assert torch.equal(out.codes, expected.codes) and torch.allclose(out.loss, expected.loss)
    # decode(codes) reads codebook[codes]: the unit codewords the layer used
    assert torch.allclose(q.codebook[out.codes], F.normalize(codebook, dim=1)[out.codes])
    # a state_dict carries it over; a copy runs the same
    twin = build_quantizer("scq", 32, 6, lam=0.1, normalize=True, cpu_kernels=cpu_kernels, **PAPER).double().eval()
    twin.load_state_dict(q.state_dict())
    assert torch.equal(twin(3 * z).quantized, out.quantized)
    assert torch.equal(copy.deepcopy(q)(3 * z).quantized, out.quantized)
    # the gradient reaches z and the stored rows through the normalisation
    _, _, _, z_grad, codebook_grad = training_step(q.train(), 3 * z, upstream)
    assert z_grad.abs().sum() > 0 and codebook_grad.abs().sum() > 0


def test_normalize_kmeans_init_and_restarts_write_the_stored_rows():
    directions = F.normalize(torch.randn(4, 3), dim=1)
    data = (directions[:, None] * torch.rand(4, 200, 1) * 10 + 0.01 * torch.randn(4, 200, 3)).reshape(-1, 3)
    q = build_quantizer("scq", 4, 3, normalize=True)
    q.train()(data)  # k-means on the normalised data: one codeword per direction, whatever the lengths
    assert (torch.cdist(directions, q.codebook.detach()).min(1).values < 0.05).all()
    restarted = build_quantizer("scq", 16, 3, kmeans_init=False, normalize=True, dead_code_steps=1)
    with torch.no_grad():
        stored_codebook(restarted).fill_(0).add_(torch.tensor([0.0, 0.0, 1.0]))  # all codewords on one point
    restarted.train()(data)  # every code but one unused for a step: restarted from encoder outputs
    assert torch.allclose(restarted.codebook.norm(dim=1), torch.ones(16))
    assert torch.unique(restarted.codebook.detach(), dim=0).shape[0] > 8


@pytest.mark.parametrize(
    "options",
    [PAPER, {**PAPER, "normalize": True}, {"line_search": True, "straight_through": True, "normalize": True}],
)
def test_variants_train_under_bf16_autocast_and_take_an_empty_batch(options):
    q = build_quantizer("scq", 32, 8, **options).train()
    encoder = torch.nn.Linear(8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(encoder(torch.randn(256, 8)))
    (out.quantized.float().square().mean() + out.loss).backward()
    assert out.quantized.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    assert encoder.weight.grad.abs().sum() > 0 and stored_codebook(q).grad.abs().sum() > 0
    for cpu_kernels in (True, False):
        q.cpu_kernels = cpu_kernels
        empty = q.eval()(torch.randn(0, 8))
        assert empty.quantized.shape == (0, 8) and empty.codes.shape == (0,)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("lam", float("nan"), r"lam .* must be > 0, got nan"),
        ("lam", 0.0, r"lam .* must be > 0, got 0.0"),
        ("lam", -1, r"lam .* must be > 0, got -1"),
        ("lam", float("inf"), r"lam .* must be > 0, got inf; pass a finite positive number"),
        ("lam", "1", r"lam .* must be > 0, got '1'"),
        ("beta", float("nan"), r"beta .* must be >= 0, got nan"),
        ("beta", -0.5, r"beta .* must be >= 0, got -0.5; pass a finite number >= 0"),
        ("support_size", 1, r"support_size must be an integer >= 2, got 1"),
        ("line_search", "no", r"line_search must be True or False, got 'no'; False gives the paper's output"),
        ("straight_through", None, r"straight_through must be True or False, got None"),
        ("normalize", 1, r"normalize must be True or False, got 1"),
        ("cpu_kernels", "yes", r"cpu_kernels must be True or False, got 'yes'"),
    ],
)
def test_bad_options_are_refused_with_the_value_and_the_fix(option, value, message):
    with pytest.raises(ValueError, match=message):
        build_quantizer("scq", 8, 4, **{option: value})
