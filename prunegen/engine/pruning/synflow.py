"""SynFlow (Tanaka et al. 2020): data-free, iterative. The score of a weight is
|∂R/∂w ⊙ w| with R = 1ᵀ(∏ |W|) 1, the network's output summed on an all-ones input
with every weight and statistic replaced by its absolute value; pruned over `rounds`
rounds on an exponential schedule, rescored after each, so that no layer is cut off
before the last round.

Precision: the scores are computed here in float64, so that the products of many small
weights of a deep net do not underflow. The authors' code (ganguli-lab/Synaptic-Flow,
`Pruners/pruners.py`) computes them in float32 at its current commit: its float64 input
is commented out. The ranking of the weights, which is all a mask reads, is the same
unless two scores fall within float32's rounding of each other."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .context import Context
from .masks import Mask, keep_top, kept


def _linearised(model: nn.Module) -> nn.Module:
    m = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in [*m.parameters(), *m.buffers()]:
            if t.is_floating_point():
                t.abs_()
    return m


def synflow_scores(model: nn.Module, mask: Mask, input_shape: tuple[int, ...],
                   _linear: nn.Module | None = None) -> dict[str, torch.Tensor]:
    m = _linear if _linear is not None else _linearised(model)
    params = dict(m.named_parameters())
    weights = [params[n] for n in mask]
    with torch.no_grad():
        for n, w in zip(mask, weights):
            w.mul_(mask[n].to(w.device, w.dtype))
    x = torch.ones((1, *input_shape), dtype=torch.float64, device=weights[0].device)
    grads = torch.autograd.grad(m(x).sum(), weights)
    return {n: (g * w).detach().abs() for n, g, w in zip(mask, grads, weights)}


def round_keeps(alive: int, keep: int, rounds: int) -> list[int]:
    """Weights kept after each round: alive * (keep / alive)^(r / rounds), the last exactly keep."""
    return [round(alive * (keep / alive) ** (r / rounds)) if alive else 0 for r in range(1, rounds)] + [keep]


def synflow(model: nn.Module, mask: Mask, keep: int, ctx: Context, rounds: int) -> Mask:
    if not 0 <= keep <= kept(mask):
        raise ValueError(f"cannot keep {keep} weights when only {kept(mask)} survive")
    linear = _linearised(model)
    for k in round_keeps(kept(mask), keep, rounds):
        mask = keep_top(synflow_scores(model, mask, ctx.input_shape, linear), mask, k)
    return mask
