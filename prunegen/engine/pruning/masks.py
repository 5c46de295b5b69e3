"""Masks: keeping the top-scored weights, global magnitude pruning, random pruning, and
keeping masked weights at zero.

A mask is a dict {parameter name: bool tensor} over the prunable weights (conv and
linear weights, minus the model's ignored layers). No hooks and no
torch.nn.utils.prune reparametrization: the weights themselves hold the zeros, so
state_dict, deepcopy and torch.compile stay clean.
"""

from __future__ import annotations

import torch
from torch import nn

Mask = dict[str, torch.Tensor]


def prunable_names(model: nn.Module, ignore: tuple[str, ...] | list[str]) -> list[str]:
    unknown = set(ignore) - {name for name, _ in model.named_modules()}
    if unknown:
        raise ValueError(f"prune.ignore names modules the model does not have: {sorted(unknown)}")
    return [f"{name}.weight" for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and name not in ignore]


def count_prunable(model: nn.Module, ignore) -> int:
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in prunable_names(model, ignore))


def full_mask(model: nn.Module, ignore) -> Mask:
    params = dict(model.named_parameters())
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in prunable_names(model, ignore)}


def kept(mask: Mask) -> int:
    return int(sum(int(m.sum()) for m in mask.values()))


def total(mask: Mask) -> int:
    return sum(m.numel() for m in mask.values())


def keep_top(scores: dict[str, torch.Tensor], mask: Mask, keep: int) -> Mask:
    """Keep the `keep` surviving weights with the highest scores, globally across layers.

    Weights already removed are never kept. Ties are broken by position (stable
    sort), so the result is deterministic.
    """
    names = list(mask)
    if not 0 <= keep <= kept(mask):
        raise ValueError(f"cannot keep {keep} weights when only {kept(mask)} survive")
    flat_scores = torch.cat([
        torch.where(mask[n], scores[n].detach().float(), torch.tensor(-torch.inf, device=mask[n].device)).flatten()
        for n in names])
    order = torch.sort(flat_scores, descending=True, stable=True).indices
    flat = torch.zeros_like(flat_scores, dtype=torch.bool)
    flat[order[:keep]] = True
    out, start = {}, 0
    for n in names:
        size = mask[n].numel()
        out[n] = flat[start:start + size].view_as(mask[n])
        start += size
    return out


def magnitude_prune(model: nn.Module, mask: Mask, keep: int) -> Mask:
    """Keep the `keep` largest-magnitude surviving weights, globally across layers."""
    params = dict(model.named_parameters())
    return keep_top({n: params[n].abs() for n in mask}, mask, keep)


def random_prune(mask: Mask, keep_per_layer: dict[str, int], generator: torch.Generator) -> Mask:
    """Within each layer keep `keep_per_layer[name]` of the surviving weights, chosen
    uniformly at random: every weight already removed stays removed."""
    out = {}
    for n, m in mask.items():
        alive = m.flatten().nonzero().squeeze(1)
        want = keep_per_layer[n]
        if want > len(alive):
            raise ValueError(f"layer {n}: cannot keep {want} weights when only {len(alive)} survive")
        chosen = alive[torch.randperm(len(alive), generator=generator, device=generator.device)[:want].to(alive.device)]
        flat = torch.zeros(m.numel(), dtype=torch.bool, device=m.device)
        flat[chosen] = True
        out[n] = flat.view_as(m)
    return out


Bound = list[tuple[torch.Tensor, torch.Tensor]]


def bind(model: nn.Module, mask: Mask) -> Bound:
    """(parameter, mask) pairs, looked up once so the per-step masking is a plain loop.

    The masks are converted to the parameter's dtype here, once: multiplying by a bool
    mask converts it on every call (a copy the size of the layer, three per step),
    and x * 1.0 and x * 0.0 are what x * True and x * False give, bit for bit.
    Layers with nothing masked (every layer of a dense arm) are left out: x * 1.0 is x,
    bit for bit, and the multiply costs a pass over the layer's gradient every step
    (5-9% of an MLP's step on CPU). Each mask takes its parameter's memory format (a
    channels_last conv weight gets a channels_last mask), which keeps the per-step
    multi-tensor multiply on its fast path; the values, and so the bits, are the same.
    """
    params = dict(model.named_parameters())
    return [(params[n], torch.empty_like(params[n]).copy_(m)) for n, m in mask.items() if not bool(m.all())]


@torch.no_grad()
def apply_mask(bound: Bound, optimizer=None) -> None:
    """Zero masked weights, their gradients and their momentum buffers (`optimizer.state`)."""
    for p, m in bound:
        p.mul_(m)
        if p.grad is not None:
            p.grad.mul_(m)
        if optimizer is not None:
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                buf.mul_(m)


@torch.no_grad()
def mask_grads(bound: Bound) -> None:
    """Zero masked gradients before the optimizer step (one multi-tensor multiply). Once
    the weights and momentum buffers are zero where masked (`apply_mask`), SGD's update
    there is exactly zero (gradient 0, weight decay x 0, momentum 0), so they stay zero
    without re-masking."""
    pairs = [(p.grad, m) for p, m in bound if p.grad is not None]
    if pairs:
        grads, masks = zip(*pairs)
        torch._foreach_mul_(list(grads), list(masks))


def sparsity_report(model: nn.Module, mask: Mask) -> dict:
    """Sparsity both ways, counted from the actual zeros and checked against the mask."""
    params = dict(model.named_parameters())
    prunable_total = total(mask)
    prunable_nonzero = sum(int(params[n].count_nonzero()) for n in mask)
    if prunable_nonzero != kept(mask):
        raise AssertionError(f"{prunable_nonzero} nonzero prunable weights but the mask keeps {kept(mask)}")
    all_total = sum(p.numel() for p in model.parameters())
    removed = prunable_total - prunable_nonzero
    return {
        "prunable_weights": prunable_total,
        "prunable_nonzero": prunable_nonzero,
        "density": prunable_nonzero / prunable_total,
        "sparsity": removed / prunable_total,
        "parameters": all_total,
        "parameters_kept": all_total - removed,
        "sparsity_all": removed / all_total,
        "layer_density": {n: int(params[n].count_nonzero()) / mask[n].numel() for n in mask},
    }
