"""The prior contract, checked on each of the three priors: causality at every position, cached ==
uncached (logits and sampled codes), conditioning, bad inputs, save/load, and learning."""

import math

import pytest
import torch
from transformers import AutoModel

import stage2_prior
from stage1_tokenizer.common.wavenet import DilatedCausalStack

K = 16
GRID = (4, 5)  # not square, on purpose
CONTEXT = (2, 5)


def tiny_prior(kind: str, **overrides):
    """A small prior of each kind, class-conditional with a context by default."""
    common = {"codebook_size": K, "code_shape": GRID, "num_classes": 3, "context_shape": CONTEXT, "condition_dropout": 0.1}
    common.update(overrides)
    if kind == "pixelcnn":
        return stage2_prior.PixelCNNPrior(
            stage2_prior.PixelCNNConfig(hidden_channels=16, num_layers=4, kernel_size=3, output_channels=16, context_channels=8, **common)
        )
    if kind == "wavenet":
        return stage2_prior.WaveNetPrior(
            stage2_prior.WaveNetConfig(residual_channels=12, skip_channels=16, num_layers=6, dilation_cycle=3, **common)
        )
    return stage2_prior.TransformerPrior(stage2_prior.TransformerConfig(hidden_size=16, num_layers=2, num_heads=2, **common))


PRIORS = ["pixelcnn", "wavenet", "transformer"]


def inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randint(0, K, (batch, *GRID), generator=g),
        torch.randint(0, 3, (batch,), generator=g),
        torch.randint(0, K, (batch, *CONTEXT), generator=g),
    )


def flat_logits(model, codes, condition, context):
    return model(codes, condition, context).logits.reshape(codes.shape[0], -1, K)


@pytest.mark.parametrize("kind", PRIORS)
def test_logits_depend_only_on_earlier_codes_at_every_position(kind):
    torch.manual_seed(0)
    model = tiny_prior(kind).eval()
    codes, condition, context = inputs()
    base = flat_logits(model, codes, condition, context)
    n = codes[0].numel()
    for i in range(n):
        later = codes.clone().view(2, -1)
        later[:, i:] = (later[:, i:] + 1 + torch.randint(0, K - 1, later[:, i:].shape)) % K  # every later code differs
        changed = flat_logits(model, later.view_as(codes), condition, context)
        torch.testing.assert_close(changed[:, :i], base[:, :i], rtol=0, atol=1e-5, msg=f"position < {i} saw codes >= {i}")
        if i > 0:
            earlier = codes.clone().view(2, -1)
            earlier[:, :i] = (earlier[:, :i] + 1) % K
            moved = flat_logits(model, earlier.view_as(codes), condition, context)
            assert (moved[:, i] - base[:, i]).abs().max() > 1e-4, f"position {i} ignores the codes before it"


@pytest.mark.parametrize("kind", PRIORS)
def test_condition_and_context_change_the_logits_and_the_null_class_exists(kind):
    model = tiny_prior(kind).eval()
    codes, condition, context = inputs()
    base = model(codes, condition, context).logits
    assert (model(codes, (condition + 1) % 3, context).logits - base).abs().min() > 0  # every position
    assert (model(codes, condition, (context + 1) % K).logits - base).abs().max() > 1e-4
    assert (model(codes, None, context).logits - base).abs().max() > 1e-4  # the null class: unconditional


@pytest.mark.parametrize("kind", PRIORS)
def test_cached_logits_equal_the_full_pass_at_every_position(kind):
    model = tiny_prior(kind).eval()
    codes, condition, context = inputs(batch=3)
    full = flat_logits(model, codes, condition, context)
    with torch.no_grad():
        cache = model._init_cache(3, condition, context)
        for i in range(codes[0].numel()):
            torch.testing.assert_close(model._cached_logits(cache, codes, i), full[:, i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", PRIORS)
def test_cached_and_uncached_sampling_give_the_same_codes(kind):
    model = tiny_prior(kind).eval()
    _, condition, context = inputs(batch=3)
    for options in ({}, {"temperature": 0.7, "top_k": 5}, {"guidance_scale": 2.5}):
        cached = model.generate(3, GRID, condition, context, generator=torch.Generator().manual_seed(7), **options)
        uncached = model.generate(3, GRID, condition, context, generator=torch.Generator().manual_seed(7), use_cache=False, **options)
        assert torch.equal(cached, uncached), options
        assert cached.shape == (3, *GRID) and cached.dtype == torch.long
    other = model.generate(3, GRID, condition, context, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(other, cached)
    greedy = model.generate(3, GRID, condition, context, top_k=1)
    assert torch.equal(greedy, model.generate(3, GRID, condition, context, top_k=1, use_cache=False))


@pytest.mark.parametrize("kind", PRIORS)
def test_bad_inputs_are_refused_with_the_value(kind):
    model = tiny_prior(kind).eval()
    codes, condition, context = inputs()
    with pytest.raises(ValueError, match=r"condition ids must lie in \[0, 2\].*got \[0, 3\]"):
        model.generate(2, condition=torch.tensor([0, 3]), context=context)
    with pytest.raises(ValueError, match=r"context= the codes of the level above, a LongTensor \(2, 2, 5\); got torch.int64 \(2, 4, 5\)"):
        model.generate(2, condition=condition, context=codes)
    with pytest.raises(ValueError, match="temperature must be > 0 and finite, got 0"):
        model.generate(2, condition=condition, context=context, temperature=0)
    for top_k in (0, K + 1):
        with pytest.raises(ValueError, match=rf"top_k must lie in 1..{K}.*got {top_k}"):
            model.generate(2, condition=condition, context=context, top_k=top_k)
    with pytest.raises(ValueError, match=r"code ids must lie in \[0, 15\], got \[0, 16\]"):
        model(codes.clamp(max=K - 1).index_fill(1, torch.tensor([0]), K), condition, context)
    with pytest.raises(ValueError, match=r"codes must be a LongTensor \(B, 4, 5\)"):
        model(codes[:, :, :3], condition, context)
    with pytest.raises(ValueError, match=r"shape \(4, 5\), got shape=\(3, 5\)"):
        model.generate(2, (3, 5), condition=condition, context=context)
    unconditional = tiny_prior(kind, num_classes=0, condition_dropout=0.0, context_shape=None)
    with pytest.raises(ValueError, match="unconditional"):
        unconditional.generate(2, condition=condition)
    with pytest.raises(ValueError, match="guidance_scale needs a conditional prior"):
        unconditional.generate(2, guidance_scale=3.0)
    no_dropout = tiny_prior(kind, condition_dropout=0.0)
    with pytest.raises(ValueError, match="pass condition="):
        no_dropout.generate(2, context=context)


@pytest.mark.parametrize("kind", PRIORS)
def test_save_and_reload_give_identical_logits_through_automodel(kind, tmp_path):
    model = tiny_prior(kind).eval()
    codes, condition, context = inputs()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model) and reloaded.config.code_shape == list(GRID)
    assert torch.equal(reloaded(codes, condition, context).logits, model(codes, condition, context).logits)


@pytest.mark.parametrize("kind", PRIORS)
def test_training_learns_class_dependent_structure(kind):
    """Class c draws each row's code from {4c .. 4c+3} and repeats it along the row: a model that
    uses the condition and the codes to the left reaches far below log(K)."""
    torch.manual_seed(0)
    model = tiny_prior(kind, context_shape=None, condition_dropout=0.0)
    labels = torch.randint(0, 3, (256,))
    row_codes = 4 * labels[:, None] + torch.randint(0, 4, (256, GRID[0]))
    codes = row_codes[:, :, None].expand(-1, -1, GRID[1]).contiguous()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(150):
        batch = torch.randint(0, 256, (32,))
        loss = model(codes[batch], labels[batch]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # the entropy of this data: per row log(4) at its first code, 0 after it
    floor = GRID[0] * math.log(4) / (GRID[0] * GRID[1])
    final = sum(losses[-10:]) / 10
    assert losses[0] > 0.9 * math.log(K)
    assert final < floor + 0.35, (losses[0], final, floor)


def test_dilated_stack_sees_exactly_its_receptive_field_and_steps_match():
    torch.manual_seed(0)
    stack = DilatedCausalStack(8, 8, num_layers=5, dilation_cycle=3, kernel_size=3, global_channels=4, local_channels=4)
    assert stack.receptive_field == 1 + 2 * (1 + 2 + 4 + 1 + 2)
    x = torch.randn(2, 8, 40)
    g, local = torch.randn(2, 4), torch.randn(2, 4, 40)
    out = stack(x, g, local)
    t, rf = 35, stack.receptive_field
    for s in range(40):
        moved = x.clone()
        moved[:, :, s] += 1.0
        changed = (stack(moved, g, local)[:, :, t] - out[:, :, t]).abs().max() > 1e-6
        assert changed == (t - rf < s <= t), s
    cache = stack.init_cache(2, g, local)
    steps = torch.stack([stack.step(x[:, :, i], cache) for i in range(40)], dim=-1)
    torch.testing.assert_close(steps, out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", PRIORS)
def test_truncated_rows_give_the_first_rows_of_the_full_pass(kind):
    """The uncached sampling path runs the network over the rows generated so far."""
    model = tiny_prior(kind).eval()
    codes, condition, context = inputs()
    full = model(codes, condition, context).logits
    for rows in range(1, GRID[0]):
        torch.testing.assert_close(model(codes[:, :rows], condition, context).logits, full[:, :rows], rtol=1e-5, atol=1e-6)
