"""The id-range check that codes, classes, speakers and contexts all share."""

from __future__ import annotations

import torch


def check_ids_in_range(ids: torch.Tensor, count: int, name: str, *, detail: str = "", ending: str = ".") -> None:
    """Raise `ValueError("{name} must lie in [0, count - 1]{detail}, got [min, max]{ending}")` when
    an id falls outside; `ending` carries the likely cause and fix."""
    if ids.numel() and (ids.min() < 0 or ids.max() >= count):
        raise ValueError(
            f"{name} must lie in [0, {count - 1}]{detail}, got [{ids.min().item()}, {ids.max().item()}]{ending}"
        )
