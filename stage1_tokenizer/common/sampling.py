"""The one sampling loop of every autoregressive network in vqgen: stage two's priors, the speech
tokenizer's WaveNet decoder (mu-law samples) and the latent VQ-VAE's PixelCNN decoder.

Each network hands the loop two ways to get the logits of the next position: `full_logits`, the
network run over everything sampled so far (the slow reference), and `start_cache`, which sets
up its fast-generation caches and returns a one-position step. Both must give the same logits,
so the same `generator` gives the same tokens either way (the tests check it for every network).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

# (tokens (rows, length), index) -> logits (rows, K) of position `index`, given tokens before it
NextLogits = Callable[[torch.Tensor, int], torch.Tensor]


def check_sampling_options(temperature: float, top_k: int | None, vocabulary_size: int) -> None:
    """ValueError, naming the value and the fix, for a temperature or top_k sampling cannot use."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < float("inf"):
        raise ValueError(f"temperature must be > 0 and finite, got {temperature!r}; use top_k=1 for greedy decoding.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= vocabulary_size):
        raise ValueError(f"top_k must lie in 1..{vocabulary_size} (the vocabulary size) as an int, or be None; got {top_k!r}.")


def sample_from_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, generator=None) -> torch.Tensor:
    """One id per row of logits (B, K): softmax(logits / temperature) restricted to the top_k."""
    logits = logits.float() / temperature
    if not bool(torch.isfinite(logits.amax(dim=-1)).all()):
        raise ValueError(
            f"temperature {temperature!r} is too small: logits / temperature overflowed float32. Use a larger "
            "temperature, or top_k=1 for greedy decoding."
        )
    if top_k is not None and top_k < logits.shape[-1]:
        threshold = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    probabilities = F.softmax(logits, dim=-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def sample_autoregressive(
    rows: int,
    length: int,
    vocabulary_size: int,
    *,
    full_logits: NextLogits,
    start_cache: Callable[[], NextLogits] | None = None,
    use_cache: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    guidance_scale: float | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    desc: str = "sample",
) -> torch.Tensor:
    """Samples `length` tokens per row, one position at a time; returns LongTensor (rows, length)
    (the first half of the rows under guidance).

    use_cache: step through the caches `start_cache()` sets up (fast), else call `full_logits`.
    guidance_scale s (classifier-free guidance): the rows are a conditional half followed by an
    unconditional half; logits = uncond + s * (cond - uncond), and each sample is written to both
    halves. progress: a tqdm bar over the positions.
    """
    check_sampling_options(temperature, top_k, vocabulary_size)
    guided = guidance_scale is not None and guidance_scale != 1.0
    tokens = torch.zeros(rows, length, dtype=torch.long, device=device)
    next_logits = start_cache() if use_cache and start_cache is not None else full_logits
    for index in tqdm(range(length), desc=desc, disable=not progress, leave=False):
        logits = next_logits(tokens, index)  # (rows, K)
        if guided:
            conditional, unconditional = logits.float().chunk(2)
            logits = unconditional + guidance_scale * (conditional - unconditional)
        sample = sample_from_logits(logits, temperature, top_k, generator)
        tokens[:, index] = sample.repeat(2) if guided else sample
    return tokens[: rows // 2] if guided else tokens
