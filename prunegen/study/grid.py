"""The grid of a study and a cell's identity: its key, its hash, its folder.

A `Study` (built by prunegen.study.load) expands into cells: one dense level-0 cell per
(benchmark, noise, seed), plus levels 1..L of every other arm. A `Cell`'s hash covers
exactly the resolved hyperparameters its arm reads (prunegen.study.hparams), so a change
re-runs only the cells it touches; which cells it reads is prunegen.study.chains.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .arm_specs import ARMS, CHAIN_ARMS, DOWNSCALED_ARMS, VARIANT_ARMS
from .hparams import Benchmark

# Bump when the meaning of a resolved hyperparameter or of a record changes:
# every cell hash changes with it, so old results are never mistaken for new.
SCHEMA_VERSION = 1
KEYS = ("benchmark", "arm", "noise", "seed", "level")  # a cell's key, in its folder's order


class StudyError(ValueError):
    """A study file or a cell request that cannot be run; the message names the culprit."""


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
    share_prefixes: bool = True  # prunegen.study.chains: where cycles are computed, never what (no hash)
    deterministic: bool = True  # CUDA's deterministic algorithms (CPU always is): recorded, not hashed
    checkpoint_every_s: float = 0.0  # where a cell may resume from, never what it computes (no hash)
    raw: dict = field(default_factory=dict, repr=False)  # the study as read, overrides applied (before defaults)

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
        for b, bm in self.benchmarks.items():
            grid = bm.grid or {}  # a benchmark may run part of the grid (the paper's ImageNet: pruning only)
            arms, levels = grid.get("arms", self.arms), grid.get("levels", self.levels)
            for noise in grid.get("noise", self.noise):
                for seed in grid.get("seeds", self.seeds):
                    out.append(self.cell(b, "dense", 0, noise, seed))
                    for arm in arms:
                        if arm != "dense":
                            out += [self.cell(b, arm, k, noise, seed) for k in range(1, levels + 1)]
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
        if self.benchmark.resources.world > 1:  # data-parallel: BatchNorm per rank, another result
            out["ranks"] = self.benchmark.resources.world  # (one process keeps its hash)
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


