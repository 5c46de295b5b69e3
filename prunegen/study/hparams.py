"""Resolved hyperparameters: typed, frozen, with help text, and which of them each arm reads.

Every default is filled in by prunegen.study.load, so a cell's hash covers every value
that shaped it. `read_by` says what a cell of each built-in arm reads of a benchmark:
every field its training does not read is left at its default, so changing one re-runs
none of those cells, and a study at the defaults keeps its hashes (OpenLTH's "a new
field with a default keeps every old hash", stated per arm).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from . import shapes
from .arm_specs import DOWNSCALED_ARMS, VARIANT_ARMS


def _help(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": text}, **kw)
    return field(default=default, metadata={"help": text}, **kw)


@dataclass(frozen=True)
class Schedule:
    kind: str = _help("LR schedule within one cycle: constant, step or cosine", "step")
    milestones: tuple[float, ...] = _help("step schedule: fractions of the cycle where LR is multiplied by gamma", (0.5, 0.75))
    gamma: float = _help("step schedule: LR factor at each milestone", 0.1)
    warmup_epochs: float = _help("linear LR warmup at the start of every cycle, in epochs", 0.0)


@dataclass(frozen=True)
class Train:
    epochs: int = _help("epochs per cycle (one full LR schedule)")
    batch_size: int = _help("training batch size", 128)
    optimizer: str = _help("optimizer (sgd)", "sgd")
    lr: float = _help("peak learning rate, restarted every cycle", 0.1)
    momentum: float = _help("SGD momentum", 0.9)
    nesterov: bool = _help("Nesterov momentum", False)
    weight_decay: float = _help("L2 weight decay", 1e-4)
    eval_batch_size: int = _help("batch size for no-grad evaluation", 1024)
    schedule: Schedule = _help("LR schedule within a cycle", Schedule())


@dataclass(frozen=True)
class Prune:
    fraction: float = _help("fraction of the remaining prunable weights removed per level", 0.2)
    ignore: tuple[str, ...] = _help("module names whose weights are never pruned (default: the model's)", ())
    variant: str = _help("imp variant: lrr (keep weights, restart LR), weight_rewind, finetune", "lrr")
    rewind_epoch: int = _help("weight_rewind: epoch of level 0 whose weights are restored (0 = init)", 1)
    finetune_lr: float = _help("finetune: constant LR of every pruning cycle", 1e-3)
    rewind_schedule: bool = _help(
        "weight_rewind: rewind the LR schedule to rewind_epoch too and train the rest of the cycle "
        "(epochs - rewind_epoch epochs), as lottery-ticket rewinding (OpenLTH) does; false restarts "
        "the schedule and trains a whole cycle from the rewound weights", True)

    def read_by(self, base: str, rewinds: bool) -> "Prune":
        """This block as a cell of built-in arm `base` reads it: every field its training does
        not read is at its default, so changing one re-runs none of those cells, and a study
        at the defaults keeps its hashes. `rewinds`: some arm of the study restores the
        dense cell's rewind point (the `weight_rewind` variant of imp or random).

        Every arm reads `ignore`: it names the layers of the mask each cell saves and every
        chain inherits from dense, and the prunable count its sparsity is reported on.
        `downscaled` arms read `fraction` only through the width it resolves to
        (Benchmark.read_by makes it canonical)."""
        d = Prune()
        if base in VARIANT_ARMS:
            rewind, finetune = self.variant == "weight_rewind", self.variant == "finetune"
            return dataclasses.replace(
                self, rewind_epoch=self.rewind_epoch if rewind else d.rewind_epoch,
                rewind_schedule=self.rewind_schedule if rewind else d.rewind_schedule,
                finetune_lr=self.finetune_lr if finetune else d.finetune_lr)
        if base in ("dense", "extended", *DOWNSCALED_ARMS):
            # dense saves the rewind point; extended and downscaled cells never restore it
            return Prune(ignore=self.ignore, rewind_epoch=self.rewind_epoch if base == "dense" and rewinds
                         else d.rewind_epoch)
        return self  # an arm this table does not know reads the whole block


@dataclass(frozen=True)
class Data:
    val_size: int = _help("validation examples held out of the training set (never noised)")
    augment: bool = _help("random crop (pad 4) + horizontal flip per batch")


@dataclass(frozen=True)
class Resources:
    gpus: int = _help("GPUs per job (per node of a cell on several nodes)", 0)
    cpus: int = _help("CPU cores per job (per rank of a data-parallel cell)", 1)
    mem_mb: int = _help("memory per job (per node of a data-parallel cell), MB", 4000)
    runtime_min: int = _help("wall time per training cycle, minutes (a job asks for it times its cycles)", 60)
    nodes: int = _help("nodes a cell runs on, data-parallel (prunegen.engine.ranks)", 1)
    tasks: int = _help("ranks (processes) per node of a data-parallel cell; default: one per GPU, at least 1", 1)

    @property
    def world(self) -> int:
        """The cell's ranks: nodes x tasks. More than one: it runs data-parallel, and its
        hash says how many (BatchNorm is per rank: N ranks do not compute what 1 does)."""
        return self.nodes * self.tasks


@dataclass(frozen=True)
class Benchmark:
    name: str = _help("benchmark name, e.g. cifar10-resnet20")
    dataset: str = _help("dataset name")
    model: dict = _help("model spec: name plus width/hidden")
    data: Data = _help("data handling")
    train: Train = _help("training of one cycle")
    prune: Prune = _help("pruning")
    resources: Resources = _help("what one cell job needs (not part of the hash, but for its ranks: Cell.hparams)")
    source: Any = None  # a dataset of the researcher's own: its study.datasets.DatasetSource
    sizes: tuple[int, int] | None = None  # (training, test) examples, where known without the data
    # The part of the study's grid this benchmark runs ({arms, levels, noise, seeds}, each a subset
    # of the study's; None: all of it): which cells exist, never what one computes (no hash).
    grid: dict | None = None

    def shape_and_classes(self) -> tuple[tuple[int, int, int], int]:
        """(C, H, W) and classes of the benchmark's dataset, built-in or the researcher's."""
        if self.source is not None:
            return self.source.shape, self.source.classes
        return shapes.DATASET_SHAPES[self.dataset]

    def read_by(self, base: str, rewinds: bool, level: int | None = None) -> "Benchmark":
        """This benchmark as a cell of built-in arm `base` (at `level`) reads it (Prune.read_by).

        A downscaled cell reads the prune fraction only through the width it resolves to at
        its level, so its fraction is replaced by a canonical one of the same width
        (shapes.canonical_fraction: the default wherever the default lands on that width,
        else the fraction of fewest decimal digits that does): two fractions of one width
        give one cell, and a study's own simple fraction (0.2, 0.5) keeps its hashes."""
        prune = self.prune.read_by(base, rewinds)
        if base in DOWNSCALED_ARMS and level is not None:
            shape, classes = self.shape_and_classes()
            prune = dataclasses.replace(prune, fraction=shapes.canonical_fraction(
                self.model, shape, classes, self.prune.ignore, self.prune.fraction, level, Prune().fraction))
        return dataclasses.replace(self, prune=prune)

    def hparams(self, arm: str) -> dict:
        """What shapes a cell of built-in arm `arm`, read from this benchmark as that arm
        reads it (read_by): resources never do; of the prune block, dense keeps its rewind
        point (it saves the weights `weight_rewind` restores) and, where they are not the
        model's default, its prunable layers (its mask, which every chain inherits)."""
        dataset = self.dataset if self.source is None else self.source.hashed()  # the definition, not its name alone
        out = {"dataset": dataset, "model": self.model,
               "data": dataclasses.asdict(self.data), "train": dataclasses.asdict(self.train)}
        prune = dataclasses.asdict(self.prune)
        if self.prune.variant != "weight_rewind":
            del prune["rewind_schedule"]  # read by weight_rewind only, which hashes it
        if arm == "dense":
            prune = {"rewind_epoch": prune["rewind_epoch"],
                     **({"ignore": prune["ignore"]} if self.prune.ignore != shapes.default_ignore(self.model) else {})}
        out["prune"] = prune
        return out
