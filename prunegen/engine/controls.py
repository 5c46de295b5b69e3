"""The model and mask a cell of each control base starts from (a study defines these arms,
prunegen.study.arm_specs): one-shot pruning, random reinitialization, and the dense
models the TIE arms retrain. `STARTS[base](cell, ...)`.

- `oneshot` / `oneshot_extended` at level k: dense level 0's trained weights, pruned to
  keep_count(N, fraction, k) in one step by the arm's method (default global
  magnitude), then trained with the LR restarted: one cycle (chain cycle 1), or cycles
  1..k, so that it trains as long as `imp` at level k in all (k+1 cycles). At level 1
  both are `imp` level 1 (the same prune of the same weights, the same cycle).
- `reinit` at level k: `mask_from` (default imp) level k's mask on a fresh
  initialization, drawn from a stream of its own ("reinit", the seed), trained one
  cycle (chain cycle 0: dense's data order): the lottery-ticket paper's control.
- `tie_removed` / `tie_random`: dense's own initialization, full width, one cycle, on
  the training split less the examples prunegen.engine.tie removes.
"""

from __future__ import annotations

import torch

from ..study import chains
from ..study.grid import Cell
from . import pruning
from .models import base_width, build_model
from .parents import load_final
from .seeds import derive
from .start import Start, init_model, keep_count, method_context


def reinit_model(cell: Cell, input_shape, num_classes: int) -> torch.nn.Module:
    """A fresh initialization of the full-width model, independent of dense's ("init")."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive(cell.seed, "reinit"))
        return build_model(cell.benchmark.model, input_shape=input_shape, num_classes=num_classes)


def tie(cell: Cell, input_shape, num_classes: int, splits=None) -> Start:
    model = init_model(cell, input_shape, num_classes)
    return Start(model, pruning.full_mask(model, cell.benchmark.prune.ignore), base_width(cell.benchmark.model),
                 [0], 1, None)


def reinit(cell: Cell, input_shape, num_classes: int, splits=None) -> Start:
    _, mask = load_final(cell, chains.parents(cell)[0])
    return Start(reinit_model(cell, input_shape, num_classes), mask, base_width(cell.benchmark.model), [0], 1, None)


def oneshot(cell: Cell, input_shape, num_classes: int, splits=None) -> Start:
    """oneshot and oneshot_extended: one step from dense level 0 to d_k, then 1 or k cycles."""
    bm, k = cell.benchmark, cell.level
    model = init_model(cell, input_shape, num_classes)
    state, dense_mask = load_final(cell, cell.sibling("dense", 0))
    model.load_state_dict(state)
    keep = keep_count(pruning.total(dense_mask), bm.prune.fraction, k)
    mask = pruning.prune(cell.method, model, dense_mask, keep, method_context(cell, input_shape, splits))
    cycles = [1] if cell.base == "oneshot" else list(range(1, k + 1))
    return Start(model, mask, base_width(bm.model), cycles, 1 + len(cycles), None)


STARTS = {"oneshot": oneshot, "oneshot_extended": oneshot, "reinit": reinit, "tie_removed": tie, "tie_random": tie}
