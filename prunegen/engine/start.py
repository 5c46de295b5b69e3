"""`Start`: the model and mask a cell begins from, and what every arm's start shares:
the seed's initialization, the count of weights a level keeps, the downscaled width, and
what a pruning method reads (prunegen.engine.arms and prunegen.engine.controls build a
`Start` per base)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..study import shapes
from ..study.grid import Cell
from . import pruning
from .data import to_float
from .models import build_model
from .seeds import derive, generator


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


def keep_count(total: int, fraction: float, level: int) -> int:
    """Weights kept at level k: round(N * (1 - fraction)^k), from N, never compounded rounding."""
    return round(total * (1 - fraction) ** level)


def downscaled_width(cell: Cell, input_shape, num_classes: int) -> tuple[int, float]:
    """The width whose prunable-weight count is closest to d_k times the full model's,
    and the ratio it achieves (counted from the models' shapes, prunegen.study.shapes)."""
    bm = cell.benchmark
    return shapes.downscaled_width(bm.model, input_shape, num_classes, bm.prune.ignore,
                                   bm.prune.fraction, cell.level)


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
            x = splits.train.x[idx]
            x = x if isinstance(x, torch.Tensor) else x.load()  # streamed: decoded as evaluation decodes
            out.append((to_float(x, splits.mean, splits.std).cpu(), splits.train.y[idx].cpu()))
        return out

    return pruning.Context(input_shape=tuple(input_shape),
                           generator=generator(cell.seed, "prune-method", cell.method["name"], cell.level),
                           batches=batches)
