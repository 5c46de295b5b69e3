"""The model and mask a cell of each built-in arm starts from (the table in
prunegen.study.arm_specs), read from its parents' records: `STARTS[base](cell, ...)`.

Under prune.variant `weight_rewind`, imp and random keep their mask but restart from the
dense cell's weights after epoch `rewind_epoch`, at that epoch of the LR schedule (the
rest of the cycle is trained); under `finetune` they train at the constant `finetune_lr`.
An arm a study defines on base `imp` is made like imp, with its own pruning method
(prunegen.engine.pruning.registry) in place of global magnitude pruning.
"""

from __future__ import annotations

from ..study import chains
from ..study.grid import Cell
from . import pruning
from .models import base_width
from .parents import load_final, rewind_state
from .seeds import generator
from .start import Start, downscaled_width, init_model, keep_count, method_context


def dense(cell: Cell, input_shape, num_classes: int, splits=None) -> Start:
    model = init_model(cell, input_shape, num_classes)
    return Start(model, pruning.full_mask(model, cell.benchmark.prune.ignore), base_width(cell.benchmark.model),
                 [0], 1, None)


def downscaled(cell: Cell, input_shape, num_classes: int, splits=None) -> Start:
    """downscaled and downscaled_extended: dense at the width matching d_k, continuing the
    same-width cell of fewer cycles where there is one (prunegen.study.chains.prefix)."""
    width, ratio = downscaled_width(cell, input_shape, num_classes)
    model = init_model(cell, input_shape, num_classes, width)
    total = chains.cycles_unshared(cell)
    parent = chains.prefix(cell)
    if parent is not None:  # its first cycles are exactly the parent's: continue from them
        state, _ = load_final(cell, parent)
        model.load_state_dict(state)
    cycles = list(range(chains.cycles_done_before(cell), total))
    return Start(model, pruning.full_mask(model, cell.benchmark.prune.ignore), width, cycles, total, None, ratio)


def _continued(cell: Cell, input_shape, num_classes: int):
    """Level k-1's final weights (in a fresh model of the full width) and its mask."""
    model = init_model(cell, input_shape, num_classes)
    state, parent_mask = load_final(cell, chains.parents(cell)[0])
    model.load_state_dict(state)
    return model, parent_mask


def extended(cell: Cell, input_shape, num_classes: int, splits=None) -> Start:
    model, mask = _continued(cell, input_shape, num_classes)
    return Start(model, mask, base_width(cell.benchmark.model), [cell.level], cell.level + 1, None)


def imp(cell: Cell, input_shape, num_classes: int, splits=None) -> Start:
    """imp, and the arms a study defines on it: level k-1 pruned by the arm's method."""
    model, parent_mask = _continued(cell, input_shape, num_classes)
    keep = keep_count(pruning.total(parent_mask), cell.benchmark.prune.fraction, cell.level)
    if cell.method is not None:  # a study-defined arm: its own method
        mask = pruning.prune(cell.method, model, parent_mask, keep, method_context(cell, input_shape, splits))
    else:
        mask = pruning.magnitude_prune(model, parent_mask, keep)
    return _pruned(cell, model, mask)


def random(cell: Cell, input_shape, num_classes: int, splits=None) -> Start:
    """imp level k's per-layer counts, drawn among the weights still alive."""
    model, parent_mask = _continued(cell, input_shape, num_classes)
    _, imp_mask = load_final(cell, cell.sibling("imp", cell.level))
    per_layer = {n: int(m.sum()) for n, m in imp_mask.items()}
    mask = pruning.random_prune(parent_mask, per_layer, generator(cell.seed, "random-mask", cell.level))
    return _pruned(cell, model, mask)


def _pruned(cell: Cell, model, mask) -> Start:
    """A pruned chain cell's start under the benchmark's pruning variant."""
    bm, k = cell.benchmark, cell.level
    full_width = base_width(bm.model)
    lr = bm.prune.finetune_lr if bm.prune.variant == "finetune" else None
    if bm.prune.variant != "weight_rewind":
        return Start(model, mask, full_width, [k], k + 1, lr)
    model.load_state_dict(rewind_state(cell, cell.sibling("dense", 0)))
    # Lottery-ticket rewinding (OpenLTH's train(start_step=...)): the weights and the LR
    # schedule go back to the rewind epoch, and each pruning cycle trains what is left of it.
    first = min(bm.prune.rewind_epoch, bm.train.epochs) if bm.prune.rewind_schedule else 0
    return Start(model, mask, full_width, [k], k + 1, lr, first_epoch=first,
                 total_epochs=bm.train.epochs + k * (bm.train.epochs - first))


STARTS = {"dense": dense, "imp": imp, "extended": extended, "downscaled": downscaled,
          "downscaled_extended": downscaled, "random": random}
