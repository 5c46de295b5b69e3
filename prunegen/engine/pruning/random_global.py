"""Random pruning with one global draw: every surviving weight equally likely to be kept
(the layers' densities fall where the draw puts them, unlike the `random` arm's, which
copies imp's per-layer densities)."""

from __future__ import annotations

import torch
from torch import nn

from .context import Context
from .masks import Mask, keep_top


def random_global(model: nn.Module, mask: Mask, keep: int, ctx: Context) -> Mask:
    draws = torch.rand(sum(m.numel() for m in mask.values()), generator=ctx.generator)
    scores, start = {}, 0
    for n, m in mask.items():
        scores[n] = draws[start:start + m.numel()].view_as(m).to(m.device)
        start += m.numel()
    return keep_top(scores, mask, keep)
