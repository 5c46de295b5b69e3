"""A study file: YAML -> validated against the one schema -> defaults filled in -> `Study`.

The schema is `study.schema.yaml` beside this module; a bad field fails with one
`StudyError` naming it and its value.
"""

from __future__ import annotations

import copy
import dataclasses
import shlex
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from . import arm_specs, datasets, factories, shapes
from .grid import Study, StudyError
from .hparams import Benchmark, Data, Prune, Resources, Schedule, Train

DEFAULT_VAL_SIZE = {"digits": 180, "mnist": 5000, "fashion_mnist": 5000,
                    "cifar10": 5000, "cifar100": 5000, "svhn": 5000}


def _load_yaml(text: str) -> Any:
    # libyaml's loader where PyYAML has it: the same values, about 10x faster to parse.
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def schema() -> dict:
    return _load_yaml(resources.files("prunegen.study").joinpath("study.schema.yaml").read_text())


def _location(error) -> str:
    return ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in error.absolute_path).replace(".[", "[") or "<top level>"


def validate(raw: Any, source: str = "study") -> None:
    """Raise StudyError naming the first bad field and its value."""
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
    if "factory" in spec:
        return factories.resolve(spec, "model")
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


def _benchmark(name: str, raw: dict, source: str = "study", own: dict | None = None,
               data_root: str = "data") -> Benchmark:
    """One benchmark; `own`: the study's datasets of the researcher's own, by name."""
    own = own or {}
    if raw["dataset"] not in shapes.DATASET_SHAPES and raw["dataset"] not in own:
        raise StudyError(f"{source}: benchmarks.{name}.dataset: {raw['dataset']!r} is neither built in "
                         f"({', '.join(shapes.DATASET_SHAPES)}) nor defined under datasets"
                         + (f" ({', '.join(own)})" if own else ""))
    ds = own.get(raw["dataset"])
    n_sizes = shapes.DATASET_SIZES[raw["dataset"]] if ds is None else datasets.sizes(ds, data_root, source)
    try:
        model = resolve_model(raw["model"])
    except ValueError as e:  # (StudyError too) named where it is: benchmarks.<name>.model...
        raise StudyError(f"{source}: benchmarks.{name}.{e}") from None
    if "factory" in model:  # imported and checked in a subprocess, once per process
        model_shape = shapes.DATASET_SHAPES[raw["dataset"]] if ds is None else (ds.shape, ds.classes)
        try:
            factories.probe(model, *model_shape, where=f"{source}: benchmarks.{name}.model")
        except ValueError as e:
            raise StudyError(str(e)) from None
    train_raw = dict(raw["train"])
    train_raw["schedule"] = _build(Schedule, train_raw.get("schedule"))
    if train_raw["schedule"].kind != "step":
        train_raw["schedule"] = dataclasses.replace(train_raw["schedule"], milestones=(), gamma=1.0)
    prune_raw = dict(raw.get("prune") or {})
    prune_raw.setdefault("ignore", shapes.default_ignore(model))
    data_raw = dict(raw.get("data") or {})
    if ds is not None and "val_size" not in data_raw:
        raise StudyError(f"{source}: benchmarks.{name}.data.val_size: required for dataset {ds.name!r} "
                         "(the researcher's own: no default size)")
    data_raw.setdefault("val_size", DEFAULT_VAL_SIZE.get(raw["dataset"]))
    data_raw.setdefault("augment", raw["dataset"] in ("cifar10", "cifar100", "svhn") if ds is None else ds.augment)
    train, prune = _build(Train, train_raw), _build(Prune, prune_raw)
    shape = shapes.DATASET_SHAPES[raw["dataset"]][0] if ds is None else ds.shape
    _check_data(name, raw["dataset"], model, data_raw["val_size"], source, n_sizes, shape)
    if prune.variant == "weight_rewind" and prune.rewind_schedule and prune.rewind_epoch >= train.epochs:
        raise StudyError(f"benchmarks.{name}.prune.rewind_epoch: {prune.rewind_epoch} leaves none of the "
                         f"{train.epochs} epochs of a cycle to train after rewinding; choose an earlier epoch")
    resources = _resources(name, raw.get("resources"))
    n_train = None if n_sizes is None else n_sizes[0] - data_raw["val_size"]
    _check_shares(name, train.batch_size, resources.world, n_train, source)
    return Benchmark(name=name, dataset=raw["dataset"], model=model, data=_build(Data, data_raw),
                     train=train, prune=prune, resources=resources,
                     source=ds, sizes=n_sizes, grid=_grid(raw.get("grid")))


def _check_shares(name: str, batch_size: int, world: int, n_train: int | None, source: str) -> None:
    """Every rank of a data-parallel cell trains on at least one example of every global batch
    (an empty share breaks BatchNorm and means nothing): the batch, and the epoch's last, smaller
    one where the training set's size is known at load."""
    if world == 1:
        return
    if batch_size < world:
        raise StudyError(f"{source}: benchmarks.{name}.train.batch_size: {batch_size} examples cannot be shared "
                         f"by the {world} ranks of resources (nodes x tasks)")
    last = 0 if n_train is None else n_train % batch_size
    if 0 < last < world:
        raise StudyError(f"{source}: benchmarks.{name}.train.batch_size: the last global batch of an epoch has "
                         f"{last} of the {n_train} training examples, fewer than the {world} ranks of resources: "
                         "one would train on none; choose another batch size or validation size")


def _grid(raw: dict | None) -> dict | None:
    if raw is None:
        return None
    out = {k: tuple(raw[k]) for k in ("arms", "seeds") if k in raw}
    if "noise" in raw:
        out["noise"] = tuple(float(f) for f in raw["noise"])
    if "levels" in raw:
        out["levels"] = int(raw["levels"])
    return out


def _resources(name: str, raw: dict | None) -> Resources:
    """The resources block, with `tasks` (ranks per node) defaulting to one per GPU."""
    raw = dict(raw or {})
    raw.setdefault("tasks", max(1, int(raw.get("gpus", 0))))
    r = _build(Resources, raw)
    if r.gpus and r.tasks > r.gpus:
        raise StudyError(f"benchmarks.{name}.resources.tasks: {r.tasks} ranks per node need a GPU each, "
                         f"but gpus is {r.gpus}")
    return r


def _check_data(name: str, dataset: str, model: dict, val_size: int, source: str,
                sizes: tuple[int, int] | None, shape) -> None:
    """What only the data could refute, refused at load (where the sizes and shapes are
    known without loading it): a validation split that leaves no training examples, a model
    that cannot take the dataset's inputs."""
    if sizes is not None and val_size >= sizes[0]:
        raise StudyError(f"{source}: benchmarks.{name}.data.val_size: {val_size} leaves no training examples: "
                         f"{dataset} has {sizes[0]} (the validation split is held out of them)")
    problem = shapes.input_problem(model, shape)
    if problem:
        raise StudyError(f"{source}: benchmarks.{name}.model: {problem} ({dataset})")


def _check_tie(specs: dict, benchmarks: dict[str, Benchmark], source: str) -> None:
    """A TIE arm must leave some training examples to train on, on every benchmark."""
    for arm, spec in specs.items():
        top = spec.options.get("top")
        if spec.base not in arm_specs.TIE_BASES or top is None:
            continue
        for b, bm in benchmarks.items():
            if bm.sizes is None:  # unknown without the data: the cell finds out
                continue
            n = bm.sizes[0] - bm.data.val_size
            if round(top * n) >= n:
                raise StudyError(f"{source}: arms ({arm}).top: {top:g} removes all {n} training examples of "
                                 f"benchmark {b}")


def _check_grid(name: str, grid: dict | None, raw: dict, arms, source: str) -> None:
    """A benchmark's grid is part of the study's: its arms, noise and seeds among the study's, its
    levels no more (a cell outside the study's grid would have no place in its tables)."""
    for key, allowed in (("arms", ("dense", *arms)), ("noise", raw["noise"]), ("seeds", raw["seeds"])):
        extra = [v for v in (grid or {}).get(key, ()) if v not in allowed]
        if extra:
            raise StudyError(f"{source}: benchmarks.{name}.grid.{key}: {extra} not in the study's {key} "
                             f"({', '.join(map(str, allowed))})")
    if (grid or {}).get("levels", 0) > raw["levels"]:
        raise StudyError(f"{source}: benchmarks.{name}.grid.levels: {grid['levels']} is more than the study's "
                         f"{raw['levels']}")


def from_dict(raw: Any, *, source: str = "study", path: Path | None = None) -> Study:
    validate(raw, source)
    try:
        arms, specs = arm_specs.parse(raw["arms"], arm_specs.ARMS)
    except ValueError as e:
        raise StudyError(f"{source}: {e}") from None
    own = {name: datasets.parse(name, d, source) for name, d in (raw.get("datasets") or {}).items()}
    benchmarks = {name: _benchmark(name, b, source, own, raw.get("data_root", "data"))
                  for name, b in raw["benchmarks"].items()}
    _check_tie(specs, benchmarks, source)
    for name, bm in benchmarks.items():
        _check_grid(name, bm.grid, raw, arms, source)
    return Study(
        name=raw["study"], path=path,
        data_root=Path(raw.get("data_root", "data")),
        results_root=Path(raw.get("results_root", "results")),
        device=raw.get("device", "auto"),
        benchmarks=benchmarks,
        arms=arms, arm_specs=specs, levels=int(raw["levels"]),
        noise=tuple(float(f) for f in raw["noise"]), noise_mode=raw.get("noise_mode", "other_class"),
        seeds=tuple(int(s) for s in raw["seeds"]), share_prefixes=bool(raw.get("share_prefixes", True)),
        deterministic=bool(raw.get("deterministic", True)),
        checkpoint_every_s=float(raw.get("checkpoint_every_s", 0.0)),
        raw=copy.deepcopy(raw),
    )


def apply_set(raw: dict, text: str | None) -> dict:
    """A copy of `raw` with the overrides `text` applied: `key.path=value` terms separated by
    spaces (shell-style quoting), each value read as YAML, so `epochs=40`, `lr=0.05`,
    `seeds=[0,1]` and `arms=[dense,imp]` mean what they say. A path runs through the study's
    own keys (benchmark names may hold dots: the longest name that matches is taken); it may
    end in a key the study does not spell out yet, which schema validation then checks. A
    term that is not key=value, or a benchmark the study does not have, is refused naming it."""
    out = copy.deepcopy(raw)
    for term in shlex.split(text or ""):
        key, sep, value = term.partition("=")
        if not sep or not key:
            raise StudyError(f"set: {term!r} is not key.path=value")
        parts, node, where = key.split("."), out, []
        while parts:
            if not isinstance(node, dict):
                raise StudyError(f"set: {key}: {'.'.join(where)} is not a mapping, it has no key {parts[0]!r}")
            # the longest run of parts that names a key here (a benchmark named "cifar10.v2")
            n = next((i for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in node), 1)
            name, parts = ".".join(parts[:n]), parts[n:]
            if not parts:
                node[name] = _load_yaml(value)
                break
            if name not in node:
                if where == ["benchmarks"]:
                    raise StudyError(f"set: {key}: the study has no benchmark {name!r}; it has "
                                     f"{', '.join(sorted(node))}")
                node[name] = {}  # an optional block the study leaves out (data, prune, ...)
            node, where = node[name], [*where, name]
    return out


def load_study(path: str | Path, overrides: dict | None = None, set_text: str | None = None) -> Study:
    """Read, validate and resolve a study file; `overrides` are merged on top (e.g.
    results_root), then the `key.path=value` terms of `set_text` (apply_set)."""
    path = Path(path)
    try:
        raw = _load_yaml(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"study file not found: {path}") from None
    except yaml.YAMLError as e:
        raise StudyError(f"{path}: not valid YAML: {e}") from None
    if isinstance(raw, dict) and overrides:
        raw = {**raw, **overrides}
    if isinstance(raw, dict) and set_text:
        raw = apply_set(raw, set_text)
    return from_dict(raw, source=str(path) + (f" (set: {set_text})" if set_text else ""), path=path)
