"""How the model of a cell is produced from its parents, arm by arm (DESIGN.md table).

| arm                 | model at level k                                  | cycles trained in this cell |
| dense               | full width, init                                  | [0]                         |
| imp                 | imp k-1's weights, magnitude-pruned               | [k]  (chain of k+1 in all)  |
| extended            | extended k-1's weights, no mask                   | [k]                         |
| downscaled          | init at the width matching density d_k            | [0]                         |
| downscaled_extended | init at that width                                | [0..k]                      |
| random              | random k-1's weights, random mask with imp k's    | [k]                         |
|                     | per-layer densities                               |                             |

Under prune.variant `weight_rewind`, imp and random keep their mask but restart from the
dense cell's weights after epoch `rewind_epoch`, at that epoch of the LR schedule (the rest
of the cycle is trained); under `finetune` they train at the constant `finetune_lr`.

An arm a study defines on base `imp` (prunegen.arm_specs) is made like imp, with its own
pruning method (prunegen.pruning.registry) in place of global magnitude pruning; the
control bases (oneshot, oneshot_extended, reinit, tie_removed, tie_random) are built in
prunegen.controls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import prefixes, pruning, records, shapes
from .config import Cell
from .data import to_float
from .models import base_width, build_model
from .seeds import derive, generator


class MissingParentError(RuntimeError):
    pass


@dataclass
class Start:
    model: nn.Module
    mask: pruning.Mask
    width: int
    cycles: list[int]          # chain cycle indices this cell trains
    total_cycles: int          # cycles behind the final model, this cell's and its ancestors'
    lr_constant: float | None  # finetune variant: constant small LR
    width_ratio: float = 1.0   # downscaled arms: prunable weights achieved / full model's
    first_epoch: int = 0       # epoch of the schedule each cycle starts at (weight_rewind: the rewind epoch)
    total_epochs: int | None = None  # epochs behind the final model (None: total_cycles whole cycles)


def init_model(cell: Cell, input_shape, num_classes: int, width: int | None = None) -> nn.Module:
    """A freshly initialised model; init depends on the seed only (same for every arm)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive(cell.seed, "init"))
        return build_model(cell.benchmark.model, input_shape=input_shape, num_classes=num_classes, width=width)


def check_parent(cell: Cell, parent: Cell) -> None:
    """Refuse to start `cell` unless `parent`'s records are complete and match their sizes."""
    state = records.check(parent.dir, parent.hash)
    if state.state == "corrupt":
        raise records.CorruptRecordError(_corrupt(cell, parent, state.problem))
    if state.state != "complete":
        raise MissingParentError(f"{cell.label} needs the complete parent cell {parent.dir} "
                                 f"({state.state}; run it first)")


def _corrupt(cell: Cell, parent: Cell, problem: str) -> str:
    return (f"{cell.label} reads the corrupt record {problem}; delete {parent.dir} and run the "
            f"workflow again, which re-runs {parent.label} and the cells after it")


def _read(cell: Cell, parent: Cell, name: str, how):
    try:
        return how(parent.dir, name)
    except records.CorruptRecordError as e:
        raise records.CorruptRecordError(_corrupt(cell, parent, str(e))) from None


def load_final(cell: Cell, parent: Cell) -> tuple[dict, pruning.Mask]:
    """The final weights and mask of `cell`'s complete parent, checksums verified."""
    check_parent(cell, parent)
    return _read(cell, parent, "model.pt", records.load_torch), _read(cell, parent, "mask.pt", records.load_torch)


def parent_history(cell: Cell, parent: Cell) -> list[dict]:
    return _read(cell, parent, "history.parquet", records.read_parquet_verified).to_pylist()


def keep_count(total: int, fraction: float, level: int) -> int:
    """Weights kept at level k: round(N * (1 - fraction)^k), from N, never compounded rounding."""
    return round(total * (1 - fraction) ** level)


def downscaled_width(cell: Cell, input_shape, num_classes: int) -> tuple[int, float]:
    """The width whose prunable-weight count is closest to d_k times the full model's,
    and the ratio it achieves (counted from the models' shapes, prunegen.shapes)."""
    bm = cell.benchmark
    return shapes.downscaled_width(bm.model, input_shape, num_classes, bm.prune.ignore,
                                   bm.prune.fraction, cell.level)


def start(cell: Cell, input_shape, num_classes: int, splits=None) -> Start:
    """Build the model and mask this cell trains, reading its parents' records
    (`splits`: the training data a data-driven pruning method scores weights on)."""
    if cell.base in ("oneshot", "oneshot_extended", "reinit", "tie_removed", "tie_random"):
        from . import controls  # the control arms a study defines: prunegen/controls.py

        return controls.start(cell, input_shape, num_classes, splits)
    bm, k = cell.benchmark, cell.level
    full_width = base_width(bm.model)
    variant = bm.prune.variant

    if cell.base in ("downscaled", "downscaled_extended"):
        width, ratio = downscaled_width(cell, input_shape, num_classes)
        model = init_model(cell, input_shape, num_classes, width)
        total = prefixes.cycles_unshared(cell)
        parent = prefixes.prefix(cell)
        if parent is not None:  # its first cycles are exactly the parent's: continue from them
            state, _ = load_final(cell, parent)
            model.load_state_dict(state)
        cycles = list(range(prefixes.cycles_done_before(cell), total))
        return Start(model, pruning.full_mask(model, bm.prune.ignore), width, cycles, total, None, ratio)

    model = init_model(cell, input_shape, num_classes)
    if cell.base == "dense":
        return Start(model, pruning.full_mask(model, bm.prune.ignore), full_width, [0], 1, None)

    state, parent_mask = load_final(cell, cell.parents()[0])
    model.load_state_dict(state)
    if cell.base == "extended":
        return Start(model, parent_mask, full_width, [k], k + 1, None)

    keep = keep_count(pruning.total(parent_mask), bm.prune.fraction, k)
    if cell.base == "imp" and cell.method is not None:  # a study-defined arm: its own method
        mask = pruning.prune(cell.method, model, parent_mask, keep, method_context(cell, input_shape, splits))
    elif cell.base == "imp":
        mask = pruning.magnitude_prune(model, parent_mask, keep)
    else:  # random: imp level k's per-layer counts, drawn among the weights still alive
        _, imp_mask = load_final(cell, cell.sibling("imp", k))
        per_layer = {n: int(m.sum()) for n, m in imp_mask.items()}
        mask = pruning.random_prune(parent_mask, per_layer, generator(cell.seed, "random-mask", k))
    lr = bm.prune.finetune_lr if variant == "finetune" else None
    if variant != "weight_rewind":
        return Start(model, mask, full_width, [k], k + 1, lr)
    model.load_state_dict(rewind_state(cell, cell.sibling("dense", 0)))
    # Lottery-ticket rewinding (OpenLTH's train(start_step=...)): the weights and the LR
    # schedule go back to the rewind epoch, and each pruning cycle trains what is left of it.
    first = min(bm.prune.rewind_epoch, bm.train.epochs) if bm.prune.rewind_schedule else 0
    return Start(model, mask, full_width, [k], k + 1, lr, first_epoch=first,
                 total_epochs=bm.train.epochs + k * (bm.train.epochs - first))


def method_context(cell: Cell, input_shape, splits) -> pruning.Context:
    """What a pruning method reads: SynFlow the input shape, random_global a generator of
    its own, SNIP and GraSP training batches (observed labels, as trained on; no
    augmentation), drawn without replacement in a seeded order of this level's own."""
    def batches(n: int) -> pruning.context.Batches:
        if splits is None:
            raise ValueError(f"{cell.label}: pruning method {cell.method['name']!r} needs the training split")
        size = cell.benchmark.train.batch_size
        order = torch.randperm(len(splits.train), generator=generator(cell.seed, "prune-batches", cell.level))
        out = []
        for i in range(n):
            idx = order[i * size:(i + 1) * size].to(splits.train.x.device)
            if len(idx) == 0:
                raise ValueError(f"{cell.label}: {n} pruning batches of {size} exceed the "
                                 f"{len(splits.train)} training examples")
            out.append((to_float(splits.train.x[idx], splits.mean, splits.std).cpu(), splits.train.y[idx].cpu()))
        return out

    return pruning.Context(input_shape=tuple(input_shape),
                           generator=generator(cell.seed, "prune-method", cell.method["name"], cell.level),
                           batches=batches)


def rewind_state(cell: Cell, dense: Cell) -> dict:
    if "rewind.pt" not in (records.read_cell_json(dense.dir) or {}).get("files", {}):
        raise MissingParentError(f"weight_rewind needs {dense.dir / 'rewind.pt'}, saved by the dense level-0 cell")
    return _read(cell, dense, "rewind.pt", records.load_torch)
