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

# Bump when the meaning of a resolved hyperparameter or of a record changes:
# every cell hash changes with it, so old results are never mistaken for new.
SCHEMA_VERSION = 1

ARMS = ("dense", "imp", "extended", "downscaled", "downscaled_extended", "random")
CHAIN_ARMS = ("imp", "extended", "random")  # level k continues level k-1
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

    def hparams(self, arm: str) -> dict:
        """What shapes a cell of `arm`: resources never do, pruning only matters past dense
        (dense keeps the rewind point, which it saves for `weight_rewind`)."""
        out = {"dataset": self.dataset, "model": self.model,
               "data": dataclasses.asdict(self.data), "train": dataclasses.asdict(self.train)}
        prune = dataclasses.asdict(self.prune)
        out["prune"] = {"rewind_epoch": prune["rewind_epoch"]} if arm == "dense" else prune
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

    @property
    def root(self) -> Path:
        return self.results_root / self.name

    @property
    def chain_arms(self) -> tuple[str, ...]:
        """Arms whose level k continues level k-1: the built-in ones and those defined on them."""
        return (*CHAIN_ARMS, *(n for n, s in self.arm_specs.items() if s.base in CHAIN_ARMS))

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
        return Cell(self, self.benchmarks[benchmark], arm, level, float(noise), int(seed))

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
    benchmark: Benchmark
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
        spec = self.study.arm_specs.get(self.arm)
        return spec.base if spec else self.arm

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
        return []  # downscaled arms train from scratch at their own width


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
    """The model spec with its width defaults spelled out (they enter the hash)."""
    name = spec["name"]
    if name == "mlp":
        return {"name": name, "hidden": list(spec.get("hidden", [300, 100]))}
    if "hidden" in spec:
        raise StudyError(f"model.hidden applies only to mlp, not {name!r}")
    default = 16 if name.startswith("resnet") else 64
    return {"name": name, "width": int(spec.get("width", default))}


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
    return Benchmark(name=name, dataset=raw["dataset"], model=model, data=_build(Data, data_raw),
                     train=_build(Train, train_raw), prune=_build(Prune, prune_raw),
                     resources=_build(Resources, raw.get("resources")))


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
        seeds=tuple(int(s) for s in raw["seeds"]),
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
