"""Gated PixelCNN specifics: the exact receptive field (causal, no blind spot) and config checks.
The contract every prior shares (cache == full pass, conditioning, save/reload, learning) is in
tests/test_priors.py."""

import pytest
import torch

from stage2_prior import PixelCNNConfig, PixelCNNPrior

K = 16


def tiny(**overrides):
    options = {"codebook_size": K, "code_shape": (5, 6), "hidden_channels": 16, "num_layers": 3, "kernel_size": 5}
    options |= {"output_channels": 32, "context_channels": 8}
    return PixelCNNPrior(PixelCNNConfig(**{**options, **overrides})).eval()


def conditional(**overrides):
    """Classes with condition dropout, and a 2x2-smaller upper level as context."""
    return tiny(code_shape=(4, 6), num_classes=3, condition_dropout=0.1, context_shape=(2, 3), context_codebook_size=7, **overrides)


def inputs(model, batch):
    c = model.config
    codes = torch.randint(0, c.codebook_size, (batch, *c.code_shape))
    condition = torch.arange(batch) % c.num_classes if c.num_classes else None
    context = torch.randint(0, c.context_codebook_size, (batch, *c.context_shape)) if c.context_shape else None
    return codes, condition, context


def influence(model, codes, condition=None, context=None):
    """(N, N): [i, j] = largest change of the logits at flat position i when code j alone changes."""
    n = codes[0].numel()
    variants = [codes[0].flatten()]
    for j in range(n):
        for shift in (1, 7):
            changed = codes[0].flatten().clone()
            changed[j] = (changed[j] + shift) % model.config.codebook_size
            variants.append(changed)
    batch = torch.stack(variants).view(len(variants), *codes.shape[1:])
    condition, context = (None if t is None else t[:1].expand(len(variants), *t.shape[1:]) for t in (condition, context))
    with torch.no_grad():
        logits = model.double()(batch, condition, context).logits.reshape(len(variants), n, -1)
    change = (logits[1:] - logits[:1]).abs().amax(-1).view(n, 2, n).amax(1)  # [j, i]
    return change.T


@pytest.mark.parametrize("make", [tiny, conditional], ids=["unconditional", "class+context"])
def test_every_position_sees_exactly_the_past(make):
    """3 layers of k=5 reach 6 rows up, 6 columns right and 7 left: on these grids the whole past.
    Position i must depend on every j < i (no blind spot: above-right included) and on no j >= i."""
    model = make()
    codes, condition, context = inputs(model, 1)
    change = influence(model, codes, condition, context)
    n = change.shape[0]
    past = torch.ones(n, n, dtype=torch.bool).tril(-1)  # [i, j]: j < i
    assert change[~past].max() < 1e-12, "a position depends on itself or on a later one"
    assert change[past].min() > 1e-9, "a position is blind to part of its past"


def test_receptive_field_of_a_shallow_stack():
    """2 layers of k=3 (p=1): (r, c) sees (r, c-3 .. c-1), (r-1, c .. c+2) and nothing 4+ rows up."""
    model = tiny(num_layers=2, kernel_size=3)
    h, w = model.config.code_shape
    change = influence(model, inputs(model, 1)[0]).view(h, w, h, w) > 1e-9  # [r, c, r', c']
    reach = 2  # num_layers * p
    for r in range(h):
        for c in range(w):
            sees = change[r, c]
            assert not sees.flatten()[r * w + c :].any()  # causal
            assert [bool(sees[r, j]) for j in range(c)] == [j >= c - 1 - reach for j in range(c)]
            if r >= 1:
                right = [bool(sees[r - 1, j]) for j in range(c, w)]
                assert right == [j <= c + reach for j in range(c, w)]  # above and above-right: no blind spot
            assert not sees[: max(r - 1 - reach, 0)].any()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"kernel_size": 4}, "kernel_size must be odd and >= 3.*got 4"),
        ({"kernel_size": 1}, "got 1"),
        ({"code_shape": (30,)}, "2-D code grids"),
        ({"num_layers": 0}, "num_layers=0"),
    ],
)
def test_bad_config_is_refused(options, message):
    with pytest.raises(ValueError, match=message):
        PixelCNNConfig(**options)
