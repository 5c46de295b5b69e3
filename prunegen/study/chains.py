"""Which cells a cell reads, and the cycles it trains: the one rule.

`parents(cell)` is every cell whose records a cell reads (its DAG inputs): per base, from
`PARENTS`. Chain arms (imp, extended, random and arms defined on imp) continue level k-1
of their own arm; random also reads imp level k (whose per-layer densities it copies),
and imp-like arms under `weight_rewind` the dense cell (its rewind point). The control
bases read what prunegen.study.arm_specs says they are made from.

Shared training prefixes of the downscaled arms: `downscaled_extended` at level k trains
k+1 cycles, from the seed's initialization, of a dense model of width w_k (the width whose
weight count matches imp's level k). The initialization depends on the seed only and each
epoch's batch order on (seed, cycle, epoch); the optimizer starts afresh every cycle. So
its first j+1 cycles are exactly `downscaled_extended` at a level j < k of the same width,
and its first cycle is exactly `downscaled` at level k (one cycle at w_k). Widths never
grow with k, so the levels of one width are adjacent, and level k continues

- level k-1 of its own arm, when w_{k-1} = w_k (and k-1 >= 1);
- else `downscaled` at level k, when the study has that arm;
- else nothing: it trains from scratch.

For ResNet-20 at 20% per level, the 18 widths are 14, 13, 11, 10, 9, 8, 7, 7, 6, 5, 5, 4,
4, 3, 3, 3, 2, 2, so a chain set of 262 cycles trains about 163. The records are
bit-identical on CPU to the unshared computation (tests/engine/test_prefixes.py). A study
opts out with `share_prefixes: false`, which is not part of any hash: it changes where a
cell's cycles are computed, never what they are.
"""

from __future__ import annotations

import functools
from typing import Callable

from . import shapes
from .arm_specs import VARIANT_ARMS, cycles_in_cell
from .grid import Cell, Study


def _none(cell: Cell) -> list[Cell]:
    return []


def _chain(cell: Cell) -> list[Cell]:
    deps = [cell.sibling(cell.arm, cell.level - 1)]
    if cell.base == "random":
        deps.append(cell.sibling("imp", cell.level))  # copies its per-layer densities
    if cell.base in VARIANT_ARMS and cell.benchmark.prune.variant == "weight_rewind":
        deps.append(cell.sibling("dense", 0))  # its rewind point
    return list({d.relpath: d for d in deps}.values())


def _prefixed(cell: Cell) -> list[Cell]:
    p = prefix(cell)
    return [] if p is None else [p]  # otherwise: from scratch at its own width


def _option(cell: Cell, key: str) -> str:
    return cell.study.arm_specs[cell.arm].options[key]


# base -> the cells a cell of it reads (level 0 of every arm is dense, which reads nothing)
PARENTS: dict[str, Callable[[Cell], list[Cell]]] = {
    "dense": _none,
    "imp": _chain,
    "extended": _chain,
    "random": _chain,
    "downscaled": _none,
    "downscaled_extended": _prefixed,
    "oneshot": lambda c: [c.sibling("dense", 0)],
    "oneshot_extended": lambda c: [c.sibling("dense", 0)],
    "reinit": lambda c: [c.sibling(_option(c, "mask_from"), c.level)],
    "tie_removed": lambda c: [c.sibling("dense", 0), c.sibling(_option(c, "source"), c.level)],
    "tie_random": _none,  # needs only the count, which it computes itself
}


def parents(cell: Cell) -> list[Cell]:
    """The cells whose records `cell` reads."""
    return [] if cell.arm == "dense" else PARENTS[cell.base](cell)


def width(cell: Cell) -> int:
    """The downscaled width at the cell's level (as prunegen.engine.start.downscaled_width)."""
    return _width(cell.study, cell.benchmark.name, cell.level)


@functools.lru_cache(maxsize=None)
def _width(study: Study, benchmark: str, level: int) -> int:
    bm = study.benchmarks[benchmark]
    input_shape, num_classes = bm.shape_and_classes()
    return shapes.downscaled_width(bm.model, input_shape, num_classes, bm.prune.ignore, bm.prune.fraction, level)[0]


def prefix(cell: Cell) -> Cell | None:
    """The cell whose final model this `downscaled_extended` cell continues (None: from scratch)."""
    if cell.arm != "downscaled_extended" or not cell.study.share_prefixes:
        return None
    k = cell.level
    if k > 1 and width(cell.sibling(cell.arm, k - 1)) == width(cell):
        return cell.sibling(cell.arm, k - 1)
    if "downscaled" in cell.study.arms:
        return cell.sibling("downscaled", k)
    return None


def cycles_unshared(cell: Cell) -> int:
    """Cycles the cell's job trains without sharing (arm_specs.cycles_in_cell): k+1 for
    `downscaled_extended` at level k, which for the downscaled arms are all the cycles
    behind the model."""
    return cycles_in_cell(cell.base, cell.level)


def cycles_done_before(cell: Cell) -> int:
    """Cycles its prefix has behind it already (0 without one)."""
    p = prefix(cell)
    return 0 if p is None else cycles_unshared(p)


def cycles_to_train(cell: Cell) -> int:
    """Cycles the cell's own job trains."""
    return cycles_unshared(cell) - cycles_done_before(cell)
