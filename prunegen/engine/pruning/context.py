"""What a pruning method may read besides the model and its mask."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Batches = list[tuple[torch.Tensor, torch.Tensor]]  # (normalised float inputs, labels)


@dataclass(frozen=True)
class Context:
    input_shape: tuple[int, ...]               # one example's (C, H, W): SynFlow's all-ones input
    generator: torch.Generator                 # random_global's draws
    batches: Callable[[int], Batches] | None = None  # n -> n training batches (SNIP, GraSP)

    def training_batches(self, n: int, method: str) -> Batches:
        if self.batches is None:
            raise ValueError(f"pruning method {method!r} scores weights on training data, but none was given")
        return self.batches(n)
