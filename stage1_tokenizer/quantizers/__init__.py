"""Quantizers: `build_quantizer(kind, codebook_size, dim, **options)`.

kind         class                       paper
"vq"         VectorQuantizer             van den Oord et al. 2017
"vq-ema"     EMAVectorQuantizer          van den Oord et al. 2017, appendix A.1
"gmvq"       GaussianMixtureQuantizer    Yan et al. 2024 (arXiv 2410.10180)
"scq"        SoftConvexQuantizer         Gautam et al. 2023 (arXiv 2310.03004)

Every kind takes channel-last `z [..., dim]` and returns a `QuantizerOutput` (quantized, codes,
loss, perplexity), and accepts the codebook-health options of `BaseQuantizer`: `kmeans_init`,
`kmeans_iters`, `dead_code_steps`, `check_finite`.
"""

from __future__ import annotations

import inspect

from .base import BaseQuantizer, CodebookUsage, QuantizerOutput, kmeans
from .gmvq import GaussianMixtureQuantizer
from .scq import SoftConvexQuantizer
from .vq import VectorQuantizer
from .vq_ema import EMAVectorQuantizer

QUANTIZERS: dict[str, type[BaseQuantizer]] = {
    "vq": VectorQuantizer,
    "vq-ema": EMAVectorQuantizer,
    "gmvq": GaussianMixtureQuantizer,
    "scq": SoftConvexQuantizer,
}


def _accepted_options(cls: type[BaseQuantizer]) -> set[str]:
    names = set()
    for klass in (cls, BaseQuantizer):
        names |= {
            p.name for p in inspect.signature(klass.__init__).parameters.values() if p.kind == p.KEYWORD_ONLY
        }
    return names


def build_quantizer(kind: str, codebook_size: int, dim: int, **options) -> BaseQuantizer:
    """Build a quantizer by name; unknown kinds and options are refused with the valid ones listed."""
    if kind not in QUANTIZERS:
        raise ValueError(f"Unknown quantizer kind {kind!r}; choose one of {', '.join(map(repr, QUANTIZERS))}.")
    cls = QUANTIZERS[kind]
    unknown = sorted(set(options) - _accepted_options(cls))
    if unknown:
        raise TypeError(
            f"Quantizer {kind!r} does not take option(s) {', '.join(unknown)}; it takes "
            f"{', '.join(sorted(_accepted_options(cls)))}."
        )
    return cls(codebook_size, dim, **options)


__all__ = [
    "QUANTIZERS",
    "BaseQuantizer",
    "CodebookUsage",
    "EMAVectorQuantizer",
    "GaussianMixtureQuantizer",
    "QuantizerOutput",
    "SoftConvexQuantizer",
    "VectorQuantizer",
    "build_quantizer",
    "kmeans",
]
