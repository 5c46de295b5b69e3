"""Gradient saliencies on training batches: SNIP (Lee et al. 2019) and GraSP (Wang et
al. 2020). Scores are taken on a copy of the model in train mode, as the authors' code
scores (BatchNorm normalises with the batches' own statistics), so the model itself (its
weights and BatchNorm statistics) is left as it was.

GraSP differentiates twice, so it scores with the MLP's fused CPU kernel switched off
(prunegen.engine.kernels.unfused: the kernel has one derivative only and refuses a second).
From a partly pruned mask (imp level 2 and up), the weights already pruned enter the
forward pass as w * m with the mask held constant, so no gradient, and no Hessian term,
flows through them: the scores are those of the network that is left. tests/engine/
test_pruning_methods.py checks both against the authors' procedure on plain nn.Linear
layers."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .. import kernels
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
    """GraSP's S = -w ⊙ Hg for the prunable weights, with g and H the gradient and Hessian
    of the mean cross-entropy of logits / temperature with respect to every conv and linear
    weight (the gradient flow runs through all of them, ignored layers included, as in the
    authors' code). Hg is one Hessian-vector product: the gradient of g(w)ᵀ stop_grad(g)."""
    m, params = _copy(model)
    flow = [f"{name}.weight" for name, mod in m.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    weights = [params[n] for n in flow]
    held = {n: mask[n].to(params[n].dtype) for n in mask}  # constant: pruned weights pass no gradient

    def loss():
        effective = {n: params[n] * held[n] for n in mask}
        return sum(F.cross_entropy(functional_call(m, effective, (x,)) / temperature, y)
                   for x, y in batches) / len(batches)

    with kernels.unfused():  # a second derivative: the fused MLP kernel has one only
        g = [t.detach() for t in torch.autograd.grad(loss(), weights)]
        g_live = torch.autograd.grad(loss(), weights, create_graph=True)
        hg = dict(zip(flow, torch.autograd.grad(sum((a * b).sum() for a, b in zip(g_live, g)), weights)))
    return {n: -(params[n] * hg[n]).detach() for n in mask}


def snip(model: nn.Module, mask: Mask, keep: int, ctx: Context, batches: int) -> Mask:
    return keep_top(snip_scores(model, mask, ctx.training_batches(batches, "snip")), mask, keep)


def grasp(model: nn.Module, mask: Mask, keep: int, ctx: Context, batches: int, temperature: float) -> Mask:
    # GraSP removes the weights of highest S (their removal reduces gradient flow least): keep the lowest.
    scores = grasp_scores(model, mask, ctx.training_batches(batches, "grasp"), temperature)
    return keep_top({n: -s for n, s in scores.items()}, mask, keep)
