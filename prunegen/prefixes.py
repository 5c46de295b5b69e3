"""Shared training prefixes of the downscaled arms.

`downscaled_extended` at level k trains k+1 cycles, from the seed's initialization, of a
dense model of width w_k (the width whose weight count matches imp's level k). The
initialization depends on the seed only and each epoch's batch order on (seed, cycle,
epoch); the optimizer starts afresh every cycle. So its first j+1 cycles are exactly
`downscaled_extended` at a level j < k of the same width, and its first cycle is exactly
`downscaled` at level k (one cycle at w_k). Widths never grow with k, so the levels of one
width are adjacent, and level k continues

- level k-1 of its own arm, when w_{k-1} = w_k (and k-1 >= 1);
- else `downscaled` at level k, when the study has that arm;
- else nothing: it trains from scratch.

For ResNet-20 at 20% per level, the 18 widths are 14, 13, 11, 10, 9, 8, 7, 7, 6, 5, 5, 4,
4, 3, 3, 3, 2, 2, so a chain set of 262 cycles trains about 163. The records are
bit-identical on CPU to the unshared computation (tests/test_prefixes.py). A study opts
out with `share_prefixes: false`, which is not part of any hash: it changes where a cell's
cycles are computed, never what they are.
"""

from __future__ import annotations

import functools

from .arm_specs import cycles_in_cell
from .config import Cell, Study


def width(cell: Cell) -> int:
    """The downscaled width at the cell's level (as prunegen.arms.downscaled_width)."""
    return _width(cell.study, cell.benchmark.name, cell.level)


@functools.lru_cache(maxsize=None)
def _width(study: Study, benchmark: str, level: int) -> int:
    from . import shapes  # counted from the models' shapes, without torch

    bm = study.benchmarks[benchmark]
    input_shape, num_classes = shapes.DATASET_SHAPES[bm.dataset]
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
    """Cycles the cell's job trains without sharing (prunegen.arm_specs.cycles_in_cell): k+1
    for `downscaled_extended` at level k, which for the downscaled arms are all the cycles
    behind the model."""
    return cycles_in_cell(cell.base, cell.level)


def cycles_done_before(cell: Cell) -> int:
    """Cycles its prefix has behind it already (0 without one)."""
    p = prefix(cell)
    return 0 if p is None else cycles_unshared(p)


def cycles_to_train(cell: Cell) -> int:
    """Cycles the cell's own job trains."""
    return cycles_unshared(cell) - cycles_done_before(cell)
