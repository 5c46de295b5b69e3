"""Gradient saliencies on training batches: SNIP (Lee et al. 2019) and GraSP (Wang et
al. 2020). Scores are taken on a copy of the model, so the model itself (its weights
and BatchNorm statistics) is left as it was."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .context import Batches, Context
from .masks import Mask, keep_top


def _copy(model: nn.Module) -> tuple[nn.Module, dict[str, nn.Parameter]]:
    m = copy.deepcopy(model).float().train()
    return m, dict(m.named_parameters())


def snip_scores(model: nn.Module, mask: Mask, batches: Batches) -> dict[str, torch.Tensor]:
    """|g ⊙ w| with g the gradient of the mean (over batches) of each batch's mean
    cross-entropy: the connection sensitivity |∂L/∂c| of a mask c at c = 1."""
    m, params = _copy(model)
    weights = [params[n] for n in mask]
    loss = sum(F.cross_entropy(m(x), y) for x, y in batches) / len(batches)
    grads = torch.autograd.grad(loss, weights)
    return {n: (g * w).detach().abs() for n, g, w in zip(mask, grads, weights)}


def grasp_scores(model: nn.Module, mask: Mask, batches: Batches, temperature: float) -> dict[str, torch.Tensor]:
    """GraSP's S = -w ⊙ Hg, with g and H the gradient and Hessian (w.r.t. the prunable
    weights) of the mean cross-entropy of logits / temperature. Hg is one
    Hessian-vector product: the gradient of g(w)ᵀ stop_grad(g)."""
    m, params = _copy(model)
    weights = [params[n] for n in mask]

    def loss():
        return sum(F.cross_entropy(m(x) / temperature, y) for x, y in batches) / len(batches)

    g = [t.detach() for t in torch.autograd.grad(loss(), weights)]
    g_live = torch.autograd.grad(loss(), weights, create_graph=True)
    hg = torch.autograd.grad(sum((a * b).sum() for a, b in zip(g_live, g)), weights)
    return {n: -(w * h).detach() for n, w, h in zip(mask, weights, hg)}


def snip(model: nn.Module, mask: Mask, keep: int, ctx: Context, batches: int) -> Mask:
    return keep_top(snip_scores(model, mask, ctx.training_batches(batches, "snip")), mask, keep)


def grasp(model: nn.Module, mask: Mask, keep: int, ctx: Context, batches: int, temperature: float) -> Mask:
    # GraSP removes the weights of highest S (their removal reduces gradient flow least): keep the lowest.
    scores = grasp_scores(model, mask, ctx.training_batches(batches, "grasp"), temperature)
    return keep_top({n: -s for n, s in scores.items()}, mask, keep)
