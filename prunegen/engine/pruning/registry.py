"""The pruning methods a study may name. Each takes (model, mask, keep, context,
**options) and returns a mask that keeps exactly `keep` of the surviving weights."""

from __future__ import annotations

from typing import Callable

from torch import nn

from .context import Context
from .magnitude import magnitude, magnitude_layerwise
from .masks import Mask, kept
from .random_global import random_global
from .saliency import grasp, snip
from .synflow import synflow

METHODS: dict[str, Callable[..., Mask]] = {
    "magnitude": magnitude,
    "magnitude_layerwise": magnitude_layerwise,
    "random_global": random_global,
    "snip": snip,
    "grasp": grasp,
    "synflow": synflow,
}


def prune(method: dict, model: nn.Module, mask: Mask, keep: int, ctx: Context) -> Mask:
    """Apply `method` ({"name": ..., **options}, as resolved by prunegen.arm_specs)."""
    options = dict(method)
    name = options.pop("name")
    if name not in METHODS:
        raise ValueError(f"unknown pruning method {name!r}; methods are {sorted(METHODS)}")
    out = METHODS[name](model, mask, keep, ctx, **options)
    if kept(out) != keep or any(bool((o & ~mask[n]).any()) for n, o in out.items()):
        raise AssertionError(f"pruning method {name!r} kept {kept(out)} weights (asked {keep}) "
                             "or revived a removed one")
    return out
