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
import os

import torch

# numba sizes its thread pool once, when it is first imported, to all of the machine's cores. A
# process given fewer threads (accelerate and torchrun set OMP_NUM_THREADS=1 per process) then
# keeps idle pool threads that compete with the other processes: GM-VQ with two processes on two
# cores ran several times slower than with one (benchmarks/train_throughput.py). So the pool is
# sized to torch's thread count, before the kernels' modules import numba, unless the variable is
# set. Child processes inherit it: a parent that imported vqgen and starts processes with fewer
# threads should set NUMBA_NUM_THREADS for them too (benchmarks/train_throughput.py does).
os.environ.setdefault("NUMBA_NUM_THREADS", str(torch.get_num_threads()))
# LLVM vectorises with 256-bit registers even where the CPU has 512-bit ones (older Xeons lowered
# their clock for 512-bit code); on this project's AVX-512 machines GM-VQ's kernels ran faster with
# 512-bit ones. Unless NUMBA_CPU_NAME or NUMBA_CPU_FEATURES is set, numba
# compiles for the host's features with that preference lifted; like the thread count, it has to
# be set before numba is imported.
if "NUMBA_CPU_FEATURES" not in os.environ and "NUMBA_CPU_NAME" not in os.environ:
    from llvmlite import binding as _llvm

    _host_features = _llvm.get_host_cpu_features()
    if _host_features.get("avx512f"):
        os.environ["NUMBA_CPU_FEATURES"] = _host_features.flatten() + ",-prefer-256-bit"

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


def check_quantizer_options(kind: str, options: dict, codebook_size: int | None = None, dim: int | None = None) -> None:
    """Refuses an unknown kind (ValueError) or option name (TypeError), naming the valid ones; with
    the sizes, also option values the quantizer refuses (a configuration fails when it is made,
    not when the model is built)."""
    if kind not in QUANTIZERS:
        raise ValueError(f"Unknown quantizer kind {kind!r}; choose one of {', '.join(map(repr, QUANTIZERS))}.")
    accepted = _accepted_options(QUANTIZERS[kind])
    unknown = sorted(set(options) - accepted)
    if unknown:
        import difflib

        hints = [f"{name!r} (did you mean {match[0]!r}?)" if (match := difflib.get_close_matches(name, accepted, n=1)) else repr(name) for name in unknown]
        raise TypeError(f"Quantizer {kind!r} does not take option(s) {', '.join(hints)}; it takes {', '.join(sorted(accepted))}.")
    if codebook_size is not None and dim is not None:
        QUANTIZERS[kind](codebook_size, dim, **options)  # its own checks of the values


def options_for_run(kind: str, options: dict, max_steps: int) -> dict:
    """The options a training run of `max_steps` gives a quantizer: GM-VQ anneals its Gumbel
    temperature over the run, unless the options set `temperature_anneal_steps`."""
    if kind == "gmvq":
        return {"temperature_anneal_steps": max_steps, **options}
    return dict(options)


def build_quantizer(kind: str, codebook_size: int, dim: int, **options) -> BaseQuantizer:
    """Build a quantizer by name; unknown kinds and options are refused with the valid ones listed."""
    check_quantizer_options(kind, options)
    return QUANTIZERS[kind](codebook_size, dim, **options)


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
    "check_quantizer_options",
    "options_for_run",
    "kmeans",
]
