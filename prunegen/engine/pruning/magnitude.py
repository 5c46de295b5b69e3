"""Magnitude pruning: global (one threshold over every layer, the default) and layerwise
(the same fraction of each layer's surviving weights)."""

from __future__ import annotations

from torch import nn

from .context import Context
from .masks import Mask, keep_top, magnitude_prune


def magnitude(model: nn.Module, mask: Mask, keep: int, ctx: Context) -> Mask:
    return magnitude_prune(model, mask, keep)


def layer_quotas(mask: Mask, keep: int) -> dict[str, int]:
    """Each layer's share of `keep`, proportional to its surviving weights, summing to
    exactly `keep`: floors first, then the remainder to the largest fractional parts
    (largest-remainder apportionment, ties to the earlier layer); exact integer arithmetic."""
    alive = {n: int(m.sum()) for n, m in mask.items()}
    total = sum(alive.values())
    if not 0 <= keep <= total:
        raise ValueError(f"cannot keep {keep} weights when only {total} survive")
    if total == 0:
        return dict.fromkeys(mask, 0)
    quota = {n: keep * a // total for n, a in alive.items()}
    by_remainder = sorted(mask, key=lambda n: -(keep * alive[n] % total))  # sorted() is stable
    for n in by_remainder[:keep - sum(quota.values())]:
        quota[n] += 1
    return quota


def magnitude_layerwise(model: nn.Module, mask: Mask, keep: int, ctx: Context) -> Mask:
    params = dict(model.named_parameters())
    return {n: keep_top({n: params[n].abs()}, {n: mask[n]}, q)[n] for n, q in layer_quotas(mask, keep).items()}
