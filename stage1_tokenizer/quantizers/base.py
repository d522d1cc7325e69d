"""What every quantizer shares: the output, input checks, and codebook health.

Codebook health (available to every kind, see docs/quantizers.md):
- k-means initialisation of the codebook from the first training batch;
- restarting codewords unused for `dead_code_steps` training steps from the current encoder
  outputs;
- usage metrics: `perplexity` per batch (in every output) and `CodebookUsage`, which counts codes
  over a whole evaluation pass.

Under `torch.distributed` the decisions that change the codebook (k-means, restarts) are made on
rank 0 and broadcast, and the usage counts they rest on are summed over ranks, so every rank keeps
an identical codebook.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class QuantizerOutput:
    """The same four fields for every quantizer kind.

    quantized:  `[..., dim]`, what the decoder receives.
    codes:      `LongTensor [...]`, one codeword index per vector.
    loss:       scalar, the quantizer's own loss terms, already weighted.
    perplexity: scalar, exp of the entropy of the batch's mean (hard) code assignment.
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    perplexity: torch.Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place (no-op in a single process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_from_rank0(tensor: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.broadcast(tensor, src=0)
    return tensor


def perplexity_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """exp(H(p)) of the distribution proportional to `counts`."""
    probs = counts.float() / counts.sum().clamp(min=1)
    entropy = -(probs * torch.log(probs.clamp(min=1e-12))).sum()
    return entropy.exp()


def kmeans(
    x: torch.Tensor, num_clusters: int, iters: int = 10, generator: torch.Generator | None = None
) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) then `iters` Lloyd steps; returns centroids.

    With fewer vectors than clusters, the extra centroids are jittered copies of data points.
    """
    x = x.detach().float()
    n = x.shape[0]
    if n < num_clusters:
        picks = torch.randint(n, (num_clusters,), generator=generator, device="cpu").to(x.device)
        return x[picks] + 1e-3 * x.std() * torch.randn(
            num_clusters, x.shape[1], generator=generator, device="cpu"
        ).to(x.device)
    first = torch.randint(n, (1,), generator=generator, device="cpu").item()
    centroids = x.new_empty(num_clusters, x.shape[1])
    centroids[0] = x[first]
    closest = ((x - centroids[0]) ** 2).sum(1)  # (N,) squared distance to the nearest seed
    for i in range(1, num_clusters):
        weights = closest.clamp(min=0).cpu()
        pick = torch.multinomial(weights, 1, generator=generator).item() if weights.sum() > 0 else i % n
        centroids[i] = x[pick]
        closest = torch.minimum(closest, ((x - centroids[i]) ** 2).sum(1))
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(1)  # (N,)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=num_clusters)
        filled = counts > 0  # an empty cluster keeps its previous centroid
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


class CodebookUsage:
    """Counts codes over an evaluation pass: the fraction of the codebook used and the perplexity.

    >>> usage = CodebookUsage(codebook_size=512)
    >>> for batch in loader: usage.update(model(batch).codes)
    >>> usage.fraction_used(), usage.perplexity()   # or usage.summarize(): both, one reduction

    Under torch.distributed, call these on every rank: counts are summed over ranks, unless
    `sum_over_processes=False` (every rank already counted every code, e.g. gathered ones).
    """

    def __init__(self, codebook_size: int, sum_over_processes: bool = True):
        self.counts = torch.zeros(codebook_size, dtype=torch.long)
        self.sum_over_processes = sum_over_processes

    def update(self, codes: torch.Tensor) -> None:
        codes = codes.detach().reshape(-1).cpu()
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.counts.numel()):
            raise ValueError(
                f"codes must lie in [0, {self.counts.numel() - 1}], got values in "
                f"[{codes.min().item()}, {codes.max().item()}]: was this usage meter built with "
                "the quantizer's codebook_size?"
            )
        self.counts += torch.bincount(codes, minlength=self.counts.numel())

    def global_counts(self) -> torch.Tensor:
        """Code counts summed over processes (call on every rank)."""
        counts = self.counts.clone()
        if self.sum_over_processes and is_distributed():
            # nccl reduces CUDA tensors only; gloo reduces CPU tensors
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            counts = counts.to(device)
            dist.all_reduce(counts)
        return counts.cpu()

    def summarize(self) -> tuple[float, float, torch.Tensor]:
        """(fraction of the codebook used, perplexity, summed counts) with one reduction."""
        counts = self.global_counts()
        return (counts > 0).float().mean().item(), perplexity_from_counts(counts).item(), counts

    def fraction_used(self) -> float:
        return self.summarize()[0]

    def perplexity(self) -> float:
        return self.summarize()[1]


class BaseQuantizer(nn.Module):
    """Checks input, flattens `[..., dim]` to `[N, dim]`, runs `_quantize`, keeps the codebook healthy.

    Subclasses implement `_quantize(flat) -> (quantized, codes, loss)` and expose `codebook`;
    those whose codebook is not an `nn.Parameter` named `codebook` override `_set_codewords`.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        *,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        dead_code_steps: int | None = None,
        check_finite: bool = True,
    ):
        super().__init__()
        if not isinstance(codebook_size, int) or codebook_size < 2:
            raise ValueError(f"codebook_size must be an integer >= 2, got {codebook_size!r}.")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}.")
        if dead_code_steps is not None and (isinstance(dead_code_steps, bool) or not isinstance(dead_code_steps, int) or dead_code_steps < 1):
            raise ValueError(
                f"dead_code_steps must be a positive number of steps or None (off), got {dead_code_steps!r}."
            )
        self.codebook_size = codebook_size
        self.dim = dim
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.dead_code_steps = dead_code_steps
        self.check_finite = check_finite
        if isinstance(kmeans_iters, bool) or not isinstance(kmeans_iters, int) or kmeans_iters < 0:
            raise ValueError(f"kmeans_iters must be an integer >= 0, got {kmeans_iters!r}.")
        # Persistent so that a resumed run neither re-initialises nor forgets which codes are idle.
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("steps_unused", torch.zeros(codebook_size, dtype=torch.long))

    # -- subclass interface -------------------------------------------------------------------
    codebook: torch.Tensor

    def _quantize(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def _set_codewords(self, index: torch.Tensor, vectors: torch.Tensor) -> None:
        self.codebook.data[index] = vectors.to(self.codebook.dtype)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        self._check_input(z)
        flat = z.reshape(-1, self.dim)  # (N, D)
        if self.training and not bool(self.initialized):
            self._kmeans_init(flat)
        quantized, codes, loss = self._quantize(flat)
        counts = torch.bincount(codes, minlength=self.codebook_size)  # (K,)
        if self.training and self.dead_code_steps is not None:
            self._restart_dead_codes(flat, counts)
        return QuantizerOutput(
            quantized=quantized.reshape(z.shape),
            codes=codes.reshape(z.shape[:-1]),
            loss=loss,
            perplexity=perplexity_from_counts(counts),
        )

    def _check_input(self, z: torch.Tensor) -> None:
        if not torch.is_tensor(z) or not z.is_floating_point():
            kind = z.dtype if torch.is_tensor(z) else type(z).__name__
            raise TypeError(f"{type(self).__name__} expects a float tensor [..., {self.dim}], got {kind}.")
        if z.ndim == 0 or z.shape[-1] != self.dim:
            raise ValueError(
                f"{type(self).__name__} expects channel-last input [..., dim] with dim={self.dim}, "
                f"got shape {tuple(z.shape)}. For a (B, C, H, W) feature map use z.permute(0, 2, 3, 1); "
                f"otherwise build the quantizer with dim={z.shape[-1] if z.ndim else '?'}."
            )
        if self.check_finite and not bool(torch.isfinite(z).all()):
            nan = int(torch.isnan(z).sum())
            inf = int(torch.isinf(z).sum())
            raise ValueError(
                f"{type(self).__name__} input has {nan} NaN and {inf} inf values out of {z.numel()}: "
                "the encoder diverged or the data holds non-finite values; check the input data, "
                "lower the learning rate or enable gradient clipping."
            )

    # -- codebook health ------------------------------------------------------------------------
    @torch.no_grad()
    def _kmeans_init(self, flat: torch.Tensor) -> None:
        if is_distributed() and dist.get_rank() != 0:  # rank 0 computes, the others receive
            centroids = flat.new_empty(self.codebook_size, self.dim, dtype=torch.float32)
        else:
            centroids = kmeans(flat, self.codebook_size, self.kmeans_iters)
        broadcast_from_rank0(centroids)
        self._set_codewords(torch.arange(self.codebook_size, device=flat.device), centroids)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor, counts: torch.Tensor) -> None:
        global_counts = all_reduce_sum(counts.clone())
        self.steps_unused.add_(1).masked_fill_(global_counts > 0, 0)
        dead = (self.steps_unused >= self.dead_code_steps).nonzero().squeeze(1)
        if dead.numel() == 0:
            return
        # Replace each dead codeword by an encoder output from this batch (rank 0's, broadcast).
        picks = torch.randint(flat.shape[0], (dead.numel(),), device=flat.device)
        replacements = broadcast_from_rank0(flat.detach()[picks].float().contiguous())
        self._set_codewords(dead, replacements)
        self.steps_unused[dead] = 0

    def extra_repr(self) -> str:
        return f"codebook_size={self.codebook_size}, dim={self.dim}"
