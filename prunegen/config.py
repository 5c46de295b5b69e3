"""Study files, resolved hyperparameters and cell identity.

A study (YAML) is validated against `study.schema.yaml`, then every default is
filled in here, so that a cell's hash covers every value that shaped it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from . import shapes

# Bump when the meaning of a resolved hyperparameter or of a record changes:
# every cell hash changes with it, so old results are never mistaken for new.
SCHEMA_VERSION = 1

ARMS = ("dense", "imp", "extended", "downscaled", "downscaled_extended", "random")
CHAIN_ARMS = ("imp", "extended", "random")  # level k continues level k-1
VARIANT_ARMS = ("imp", "random")  # the arms whose training the pruning variant shapes
DOWNSCALED_ARMS = ("downscaled", "downscaled_extended")  # dense at a width matching d_k
DEFAULT_VAL_SIZE = {"digits": 180, "mnist": 5000, "fashion_mnist": 5000,
                    "cifar10": 5000, "cifar100": 5000, "svhn": 5000}


class StudyError(ValueError):
    """A study file or a cell request that cannot be run; the message names the culprit."""


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
    gpus: int = _help("GPUs per job", 0)
    cpus: int = _help("CPU cores per job", 1)
    mem_mb: int = _help("memory per job, MB", 4000)
    runtime_min: int = _help("wall time per training cycle, minutes (a job asks for it times its cycles)", 60)


@dataclass(frozen=True)
class Benchmark:
    name: str = _help("benchmark name, e.g. cifar10-resnet20")
    dataset: str = _help("dataset name")
    model: dict = _help("model spec: name plus width/hidden")
    data: Data = _help("data handling")
    train: Train = _help("training of one cycle")
    prune: Prune = _help("pruning")
    resources: Resources = _help("what one cell job needs (not part of the hash)")

    def read_by(self, base: str, rewinds: bool, level: int | None = None) -> "Benchmark":
        """This benchmark as a cell of built-in arm `base` (at `level`) reads it (Prune.read_by).

        A downscaled cell reads the prune fraction only through the width it resolves to at
        its level, so its fraction is replaced by a canonical one of the same width
        (shapes.canonical_fraction: the default wherever the default lands on that width,
        else the fraction of fewest decimal digits that does): two fractions of one width
        give one cell, and a study's own simple fraction (0.2, 0.5) keeps its hashes."""
        prune = self.prune.read_by(base, rewinds)
        if base in DOWNSCALED_ARMS and level is not None:
            shape, classes = shapes.DATASET_SHAPES[self.dataset]
            prune = dataclasses.replace(prune, fraction=shapes.canonical_fraction(
                self.model, shape, classes, self.prune.ignore, self.prune.fraction, level, Prune().fraction))
        return dataclasses.replace(self, prune=prune)

    def hparams(self, arm: str) -> dict:
        """What shapes a cell of built-in arm `arm`, read from this benchmark as that arm
        reads it (read_by): resources never do; of the prune block, dense keeps its rewind
        point (it saves the weights `weight_rewind` restores) and, where they are not the
        model's default, its prunable layers (its mask, which every chain inherits)."""
        out = {"dataset": self.dataset, "model": self.model,
               "data": dataclasses.asdict(self.data), "train": dataclasses.asdict(self.train)}
        prune = dataclasses.asdict(self.prune)
        if self.prune.variant != "weight_rewind":
            del prune["rewind_schedule"]  # read by weight_rewind only, which hashes it
        if arm == "dense":
            prune = {"rewind_epoch": prune["rewind_epoch"],
                     **({"ignore": prune["ignore"]} if self.prune.ignore != default_ignore(self.model) else {})}
        out["prune"] = prune
        return out


@dataclass(frozen=True, eq=False)
class Study:
    name: str
    path: Path | None
    data_root: Path
    results_root: Path
    device: str
    benchmarks: dict[str, Benchmark]
    arms: tuple[str, ...]
    levels: int
    noise: tuple[float, ...]
    noise_mode: str
    seeds: tuple[int, ...]
    arm_specs: dict = field(default_factory=dict)  # arms the study defines (prunegen.arm_specs)
    share_prefixes: bool = True  # prunegen.prefixes: where cycles are computed, never what (no hash)

    @property
    def root(self) -> Path:
        return self.results_root / self.name

    @property
    def chain_arms(self) -> tuple[str, ...]:
        """Arms whose level k continues level k-1: the built-in ones and those defined on them."""
        return (*CHAIN_ARMS, *(n for n, s in self.arm_specs.items() if s.base in CHAIN_ARMS))

    def base_of(self, arm: str) -> str:
        """The built-in arm `arm` is made like (itself, unless the study defines it)."""
        spec = self.arm_specs.get(arm)
        return spec.base if spec else arm

    def rewinds(self, benchmark: str) -> bool:
        """Whether some arm of the study restores the dense cell's rewind point on `benchmark`."""
        return (self.benchmarks[benchmark].prune.variant == "weight_rewind"
                and any(self.base_of(a) in VARIANT_ARMS for a in self.arms))

    def cell(self, benchmark: str, arm: str, level: int, noise: float, seed: int) -> "Cell":
        return _cell(self, benchmark, arm, level, noise, seed)

    def _make_cell(self, benchmark: str, arm: str, level: int, noise: float, seed: int) -> "Cell":
        if benchmark not in self.benchmarks:
            raise StudyError(f"unknown benchmark {benchmark!r}; the study has {sorted(self.benchmarks)}")
        if arm not in ARMS and arm not in self.arm_specs:
            raise StudyError(f"unknown arm {arm!r}; arms are {[*ARMS, *self.arm_specs]}")
        if not isinstance(level, int) or level < 0:
            raise StudyError(f"level must be a non-negative integer, got {level!r}")
        if not 0 <= float(noise) < 1:
            raise StudyError(f"noise must be in [0, 1), got {noise!r}")
        if level == 0 or arm == "dense":
            if level != 0:
                raise StudyError(f"arm 'dense' has only level 0, got level {level}")
            arm = "dense"  # level 0 of every arm is the shared dense cell
        base = self.base_of(arm)
        seen = _read_by(self, benchmark, base, level if base in DOWNSCALED_ARMS else None)
        return Cell(self, seen, arm, level, float(noise), int(seed))

    def cells(self) -> list["Cell"]:
        """Every cell of the grid: one dense level-0 cell per (benchmark, noise, seed),
        plus levels 1..L of every other arm."""
        out = []
        for b in self.benchmarks:
            for noise in self.noise:
                for seed in self.seeds:
                    out.append(self.cell(b, "dense", 0, noise, seed))
                    for arm in self.arms:
                        if arm != "dense":
                            out += [self.cell(b, arm, k, noise, seed) for k in range(1, self.levels + 1)]
        return out


@dataclass(frozen=True, eq=False)
class Cell:
    study: Study
    benchmark: Benchmark  # the study's benchmark as this cell's arm reads it (Benchmark.read_by)
    arm: str
    level: int
    noise: float
    seed: int

    @property
    def key(self) -> dict:
        return {"benchmark": self.benchmark.name, "arm": self.arm, "noise": self.noise,
                "seed": self.seed, "level": self.level}

    @property
    def base(self) -> str:
        """The built-in arm this cell is made like (itself, unless the study defines the arm)."""
        return self.study.base_of(self.arm)

    @property
    def method(self) -> dict | None:
        """The pruning method of a study-defined arm; None for the built-in arms."""
        spec = self.study.arm_specs.get(self.arm)
        return spec.method if spec else None

    def hparams(self) -> dict:
        out = {"schema_version": SCHEMA_VERSION, **self.benchmark.hparams(self.base),
               "noise_mode": self.study.noise_mode, **self.key}
        if self.arm in self.study.arm_specs:  # built-in arms' hashes stay as they were
            out["arm_spec"] = self.study.arm_specs[self.arm].hparams()
        return out

    @cached_property
    def hash(self) -> str:
        text = json.dumps(self.hparams(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def relpath(self) -> str:
        return (f"benchmark={self.benchmark.name}/arm={self.arm}/noise={format_noise(self.noise)}"
                f"/seed={self.seed}/level={self.level}")

    @property
    def dir(self) -> Path:
        return self.study.root / "cells" / self.relpath

    @property
    def label(self) -> str:
        return f"{self.benchmark.name} {self.arm} L{self.level} noise={format_noise(self.noise)} seed={self.seed}"

    def sibling(self, arm: str, level: int) -> "Cell":
        return self.study.cell(self.benchmark.name, arm, level, self.noise, self.seed)

    def parents(self) -> list["Cell"]:
        """Cells whose records this cell reads."""
        if self.arm == "dense":
            return []
        spec = self.study.arm_specs.get(self.arm)
        if spec is not None and spec.base != "imp":  # oneshot, reinit, TIE: prunegen.arm_specs.parents
            from .arm_specs import parents
            return [self.sibling(a, k) for a, k in parents(spec, self.level)]
        if self.base in CHAIN_ARMS:
            prev = self.sibling(self.arm, self.level - 1)
            deps = [prev]
            if self.base == "random":
                deps.append(self.sibling("imp", self.level))  # copies its per-layer densities
            if self.base in ("imp", "random") and self.benchmark.prune.variant == "weight_rewind":
                deps.append(self.sibling("dense", 0))
            return list({d.relpath: d for d in deps}.values())
        from .prefixes import prefix  # downscaled_extended continues a same-width prefix

        p = prefix(self)
        return [] if p is None else [p]  # otherwise: from scratch at its own width


@functools.lru_cache(maxsize=None)
def _read_by(study: Study, benchmark: str, base: str, level: int | None) -> Benchmark:
    # Shared by every cell of one (benchmark, arm[, level]): a grid has thousands of them.
    return study.benchmarks[benchmark].read_by(base, study.rewinds(benchmark), level)


@functools.lru_cache(maxsize=None)
def _cell(study: Study, benchmark: str, arm: str, level: int, noise: float, seed: int) -> Cell:
    # A DAG of thousands of jobs asks for the same cell (and its hash) many times.
    return study._make_cell(benchmark, arm, level, noise, seed)


def format_noise(noise: float) -> str:
    """The folder spelling of a noise fraction: repr of the float, so 0.1 -> '0.1'."""
    return repr(float(noise))


def _load_yaml(text: str) -> Any:
    # libyaml's loader where PyYAML has it: the same values, about 10x faster to parse.
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def schema() -> dict:
    return _load_yaml(resources.files("prunegen").joinpath("study.schema.yaml").read_text())


def _location(error) -> str:
    return ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in error.absolute_path).replace(".[", "[") or "<top level>"


def validate(raw: Any, source: str = "study") -> None:
    """Raise StudyError naming the first bad field and its value."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(raw))
    if error is not None:
        raise StudyError(f"{source}: {_location(error)}: {error.message}")


def _build(cls, raw: dict | None, **fixed: Any):
    kwargs = dict(raw or {})
    kwargs.update(fixed)
    for f in dataclasses.fields(cls):
        if f.name in kwargs and isinstance(kwargs[f.name], list):
            kwargs[f.name] = tuple(kwargs[f.name])
    return cls(**kwargs)


def resolve_model(spec: dict) -> dict:
    """The model spec with its width and BatchNorm-init defaults spelled out (they enter the
    hash). The MLP has no BatchNorm, so its spec has no bn_init (and keeps its old hashes)."""
    name = spec["name"]
    if name == "mlp":
        if "bn_init" in spec:
            raise StudyError("model.bn_init applies only to models with BatchNorm, not 'mlp'")
        return {"name": name, "hidden": list(spec.get("hidden", [300, 100]))}
    if "hidden" in spec:
        raise StudyError(f"model.hidden applies only to mlp, not {name!r}")
    default = 16 if name.startswith("resnet") else 64
    # OpenLTH's CIFAR models default to batchnorm_init='uniform' (gamma ~ U[0, 1), beta = 0)
    return {"name": name, "width": int(spec.get("width", default)), "bn_init": spec.get("bn_init", "uniform")}


def default_ignore(model: dict) -> tuple[str, ...]:
    # Mirrors prunegen.models.default_ignore without importing torch at config time.
    return {"mlp": ("output",)}.get(model["name"], ("classifier",) if model["name"].startswith("vgg") else ())


def _benchmark(name: str, raw: dict) -> Benchmark:
    model = resolve_model(raw["model"])
    train_raw = dict(raw["train"])
    train_raw["schedule"] = _build(Schedule, train_raw.get("schedule"))
    if train_raw["schedule"].kind != "step":
        train_raw["schedule"] = dataclasses.replace(train_raw["schedule"], milestones=(), gamma=1.0)
    prune_raw = dict(raw.get("prune") or {})
    prune_raw.setdefault("ignore", default_ignore(model))
    data_raw = dict(raw.get("data") or {})
    data_raw.setdefault("val_size", DEFAULT_VAL_SIZE[raw["dataset"]])
    data_raw.setdefault("augment", raw["dataset"] in ("cifar10", "cifar100", "svhn"))
    train, prune = _build(Train, train_raw), _build(Prune, prune_raw)
    if prune.variant == "weight_rewind" and prune.rewind_schedule and prune.rewind_epoch >= train.epochs:
        raise StudyError(f"benchmarks.{name}.prune.rewind_epoch: {prune.rewind_epoch} leaves none of the "
                         f"{train.epochs} epochs of a cycle to train after rewinding; choose an earlier epoch")
    return Benchmark(name=name, dataset=raw["dataset"], model=model, data=_build(Data, data_raw),
                     train=train, prune=prune, resources=_build(Resources, raw.get("resources")))


def from_dict(raw: Any, *, source: str = "study", path: Path | None = None) -> Study:
    from . import arm_specs

    validate(raw, source)
    try:
        arms, specs = arm_specs.parse(raw["arms"], ARMS)
    except ValueError as e:
        raise StudyError(f"{source}: {e}") from None
    return Study(
        name=raw["study"], path=path,
        data_root=Path(raw.get("data_root", "data")),
        results_root=Path(raw.get("results_root", "results")),
        device=raw.get("device", "auto"),
        benchmarks={name: _benchmark(name, b) for name, b in raw["benchmarks"].items()},
        arms=arms, arm_specs=specs, levels=int(raw["levels"]),
        noise=tuple(float(f) for f in raw["noise"]), noise_mode=raw.get("noise_mode", "other_class"),
        seeds=tuple(int(s) for s in raw["seeds"]), share_prefixes=bool(raw.get("share_prefixes", True)),
    )


def load_study(path: str | Path, overrides: dict | None = None) -> Study:
    """Read, validate and resolve a study file; `overrides` are merged on top (e.g. results_root)."""
    path = Path(path)
    try:
        raw = _load_yaml(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"study file not found: {path}") from None
    except yaml.YAMLError as e:
        raise StudyError(f"{path}: not valid YAML: {e}") from None
    if isinstance(raw, dict) and overrides:
        raw = {**raw, **overrides}
    return from_dict(raw, source=str(path), path=path)
