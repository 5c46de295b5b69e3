"""What the workflow needs to know of a study: the files of each cell, what a cell
reads, its hash (Snakemake's params trigger) and its resources.

Pure functions of the study; no Snakemake import, so the rules stay thin and this
is tested like the rest of the engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .config import ARMS, Cell, Study, StudyError, format_noise, load_study
from .records import COMPLETE_MARKER, RECORD_FILES

CELL_PATTERN = "benchmark={benchmark}/arm={arm}/noise={noise}/seed={seed}/level={level}"
CELL_FILES = {Path(f).stem.replace(".", "_"): f for f in (*RECORD_FILES, COMPLETE_MARKER)}
TABLES = ("summary", "history", "subgroups", "subgroup_headline", "headline", "memorization", "optimal")
FIGURES = ("test_error", "train_loss", "memorization", "decomposition", "optimal_sparsity", "completeness")

WILDCARD_CONSTRAINTS = {
    "benchmark": r"[A-Za-z0-9_.-]+",
    "arm": "|".join(ARMS),
    "noise": r"[0-9.e-]+",
    "seed": r"\d+",
    "level": r"\d+",
}


def load(path: str | Path, results_root: str | None = None, data_root: str | None = None) -> Study:
    overrides = {k: v for k, v in {"results_root": results_root, "data_root": data_root}.items() if v}
    return load_study(path, overrides)


def cell_outputs(root: str | Path) -> dict[str, str]:
    """Output patterns of the cell rules, with the cell's wildcards."""
    return {name: f"{root}/cells/{CELL_PATTERN}/{f}" for name, f in CELL_FILES.items()}


def cell(study: Study, w) -> Cell:
    """The cell named by a job's wildcards; refuses spellings that would not round-trip."""
    noise = float(w.noise)
    if format_noise(noise) != w.noise:
        raise StudyError(f"noise folder {w.noise!r} is not spelled {format_noise(noise)!r}")
    c = study.cell(w.benchmark, w.arm, int(w.level), noise, int(w.seed))
    if c.arm != w.arm:
        raise StudyError(f"level 0 of arm {w.arm!r} is the dense cell: ask for arm=dense/level=0")
    return c


def cell_files(c: Cell) -> list[str]:
    return [str(c.dir / f) for f in CELL_FILES.values()]


def parent_inputs(study: Study, w) -> list[str]:
    """The completion markers of the cells this one reads (they are written last)."""
    return [str(p.dir / COMPLETE_MARKER) for p in cell(study, w).parents()]


def grid_markers(study: Study) -> list[str]:
    return [str(c.dir / COMPLETE_MARKER) for c in study.cells()]


def resources(study: Study, w) -> dict:
    """The study's resources for this cell's job; runtime_min is per cycle, so a
    downscaled_extended cell at level k asks for k+1 times it."""
    r = dict(vars(study.benchmarks[w.benchmark].resources))
    c = cell(study, w)
    r["runtime_min"] *= c.level + 1 if c.arm == "downscaled_extended" else 1
    return r


@dataclass(frozen=True)
class CellRule:
    """The cell rule of one benchmark. One rule per benchmark so that threads, memory
    and GPUs are plain numbers: Snakemake evaluates a callable once per job (with an
    `inspect.signature` each time), which dominated the dry run of a large grid."""

    study: Study
    benchmark: str

    @property
    def name(self) -> str:
        return "cell_" + re.sub(r"\W", "_", self.benchmark)

    @property
    def benchmark_regex(self) -> str:
        """The rule's constraint on the `benchmark` wildcard: this benchmark only. The
        wildcard stays in the paths (and the shell command) so that the rule's code and
        params are those of the single `cell` rule before it: results made by either
        are up to date for both."""
        return re.escape(self.benchmark)

    @property
    def _resources(self):
        return self.study.benchmarks[self.benchmark].resources

    @property
    def threads(self) -> int:
        return self._resources.cpus

    @property
    def mem_mb(self) -> int:
        return self._resources.mem_mb

    @property
    def gpus(self) -> int:
        return self._resources.gpus

    @property
    def runtime(self):
        """Minutes: a number, or per job where downscaled_extended cells train k+1 cycles."""
        if "downscaled_extended" not in self.study.arms:
            return self._resources.runtime_min
        return self.job_runtime

    def job_runtime(self, wildcards) -> int:
        return resources(self.study, wildcards)["runtime_min"]

    def inputs(self, wildcards) -> list[str]:
        return parent_inputs(self.study, wildcards)

    def cell_hash(self, wildcards) -> str:
        return cell(self.study, wildcards).hash


def cell_rules(study: Study) -> list[CellRule]:
    rules = [CellRule(study, b) for b in study.benchmarks]
    names = [r.name for r in rules]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise StudyError(f"benchmarks {[r.benchmark for r in rules if r.name in clash]} give the same rule "
                         f"name {clash[0]!r}: rename one (letters, digits and _ count; - and . become _)")
    return rules
