"""Random draws that are a function of (seed, epoch, index), for datasets whose items are random
(audio crops, windows of code sequences): an item is the same in any DataLoader worker, and after
a resume, as in the uninterrupted run. The training loop calls `set_epoch` at each epoch; the
epoch sits in shared memory, so persistent worker processes see it too."""

from __future__ import annotations

import torch

_PRIME = 1_000_003


class EpochRandomness:
    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self._epoch = torch.zeros((), dtype=torch.long).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def randint(self, high: int, index: int) -> int:
        """A draw from 0 .. high-1 for item `index` of the current epoch."""
        key = ((self.seed * _PRIME + int(self._epoch)) * _PRIME + index) % 2**63
        return int(torch.randint(high, (), generator=torch.Generator().manual_seed(key)))
