"""The models of the control arms a study defines (prunegen.arm_specs): one-shot
pruning, random reinitialization, and the dense models the TIE arms retrain.

- `oneshot` / `oneshot_extended` at level k: dense level 0's trained weights, pruned to
  keep_count(N, fraction, k) in one step by the arm's method (default global
  magnitude), then trained with the LR restarted: one cycle (chain cycle 1), or cycles
  1..k, so that it trains as long as `imp` at level k in all (k+1 cycles). At level 1
  both are `imp` level 1 (the same prune of the same weights, the same cycle).
- `reinit` at level k: `mask_from` (default imp) level k's mask on a fresh
  initialization, drawn from a stream of its own ("reinit", the seed), trained one
  cycle (chain cycle 0: dense's data order): the lottery-ticket paper's control.
- `tie_removed` / `tie_random`: dense's own initialization, full width, one cycle, on
  the training split less the examples prunegen.tie removes.
"""

from __future__ import annotations

import torch

from . import pruning
from .arms import Start, init_model, keep_count, load_final, method_context
from .config import Cell
from .models import base_width, build_model
from .seeds import derive

BASES = ("oneshot", "oneshot_extended", "reinit", "tie_removed", "tie_random")


def reinit_model(cell: Cell, input_shape, num_classes: int) -> torch.nn.Module:
    """A fresh initialization of the full-width model, independent of dense's ("init")."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive(cell.seed, "reinit"))
        return build_model(cell.benchmark.model, input_shape=input_shape, num_classes=num_classes)


def start(cell: Cell, input_shape, num_classes: int, splits=None) -> Start:
    bm, k, base = cell.benchmark, cell.level, cell.base
    width = base_width(bm.model)
    if base in ("tie_removed", "tie_random"):
        model = init_model(cell, input_shape, num_classes)
        return Start(model, pruning.full_mask(model, bm.prune.ignore), width, [0], 1, None)
    if base == "reinit":
        _, mask = load_final(cell, cell.parents()[0])
        return Start(reinit_model(cell, input_shape, num_classes), mask, width, [0], 1, None)
    # oneshot, oneshot_extended
    model = init_model(cell, input_shape, num_classes)
    state, dense_mask = load_final(cell, cell.sibling("dense", 0))
    model.load_state_dict(state)
    keep = keep_count(pruning.total(dense_mask), bm.prune.fraction, k)
    mask = pruning.prune(cell.method, model, dense_mask, keep, method_context(cell, input_shape, splits))
    cycles = [1] if base == "oneshot" else list(range(1, k + 1))
    return Start(model, mask, width, cycles, 1 + len(cycles), None)
