"""The stage-one gated PixelCNN used directly, with continuous local conditioning features (as the
latent VQ-VAE's decoder uses it): causal at every position, the features reach their position's
logits and pass gradients back, and the cached steps equal the full pass."""

import torch

from stage1_tokenizer.common.pixelcnn import GatedPixelCNN

K, H, W, G, L = 11, 5, 4, 6, 3  # 3 layers of k=5 reach 6 rows up, 6 columns right, 7 left: all of a 5x4 past


def network(**overrides):
    torch.manual_seed(0)
    options = {"hidden_channels": 16, "num_layers": 3, "kernel_size": 5, "output_channels": 24}
    options |= {"condition_channels": G, "context_channels": L}
    return GatedPixelCNN(K, K, **{**options, **overrides}).double().eval()


def conditioning(batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    condition = torch.randn(batch, G, generator=g, dtype=torch.double)
    context = torch.randn(batch, L, H, W, generator=g, dtype=torch.double)
    return condition, context


def test_logits_at_each_position_see_exactly_the_earlier_ids():
    model = network()
    n = H * W
    base = torch.randint(0, K, (n,), generator=torch.Generator().manual_seed(2))
    variants = [base]
    for i in range(n):  # every id from position i on changes
        later = base.clone()
        later[i:] = (later[i:] + 1 + torch.randint(0, K - 1, (n - i,))) % K
        variants.append(later)
    for j in range(n):  # id j alone changes (two ways)
        for shift in (1, 5):
            one = base.clone()
            one[j] = (one[j] + shift) % K
            variants.append(one)
    ids = torch.stack(variants).view(-1, H, W)
    condition, context = (t.expand(len(variants), *t.shape[1:]) for t in conditioning(1))
    with torch.no_grad():
        logits = model(ids, condition, context).reshape(len(variants), n, K)
    change = (logits - logits[:1]).abs().amax(-1)  # (variants, n)
    for i in range(n):
        assert change[1 + i, : i + 1].max() < 1e-12, f"positions <= {i} saw ids >= {i}"
    single = change[1 + n :].view(n, 2, n).amax(1)  # [j, i]: ids j changed, logits i
    past = torch.ones(n, n, dtype=torch.bool).tril(-1)  # [i, j]: j < i
    assert single.T[~past].max() < 1e-12, "a position depends on its own id or a later one"
    assert single.T[past].min() > 1e-9, "a position is blind to part of its past"


def test_local_features_reach_their_position_and_pass_gradients():
    model = network()
    ids = torch.randint(0, K, (2, H, W), generator=torch.Generator().manual_seed(3))
    condition, context = conditioning(2)
    with torch.no_grad():
        base = model(ids, condition, context)
        for r in range(H):
            for c in range(W):
                moved = context.clone()
                moved[:, :, r, c] += 1.0
                assert (model(ids, condition, moved)[:, r, c] - base[:, r, c]).abs().max() > 1e-6, (r, c)
    # continuous features (e.g. from quantized code vectors) receive gradients at every position
    features = context.clone().requires_grad_(True)
    source = torch.randn(2, G, dtype=torch.double, requires_grad=True)
    logits = model(ids, torch.tanh(source), features)
    torch.nn.functional.cross_entropy(logits.reshape(-1, K), ids.reshape(-1)).backward()
    assert features.grad is not None and source.grad is not None
    assert (features.grad.abs().sum(1) > 0).all(), "a position's features got no gradient"
    assert source.grad.abs().sum() > 0


def test_cached_steps_equal_the_full_pass_with_features():
    model = network()
    ids = torch.randint(0, K, (3, H, W), generator=torch.Generator().manual_seed(4))
    condition, context = conditioning(3)
    for cond in (condition, None):  # with and without the global vector
        with torch.no_grad():
            full = model(ids, cond, context).reshape(3, H * W, K)
            cache = model.init_cache(3, (H, W), cond, context)
            for i in range(H * W):
                torch.testing.assert_close(model.step(cache, ids), full[:, i], rtol=0, atol=1e-10, msg=f"position {i}")
        assert cache.next_index == H * W
    # rows so far with the whole grid's features = the same rows of the full pass
    with torch.no_grad():
        full = model(ids, condition, context)
        torch.testing.assert_close(model(ids[:, :2], condition, context), full[:, :2], rtol=0, atol=1e-12)


def test_generate_cached_equals_uncached_from_features():
    model = network(condition_channels=0).float()
    _, context = conditioning(2)
    context = context.float()
    samples = [
        model.generate(context, generator=torch.Generator().manual_seed(5), use_cache=use_cache) for use_cache in (True, False)
    ]
    assert samples[0].shape == (2, H, W) and samples[0].dtype == torch.long
    assert torch.equal(samples[0], samples[1])
