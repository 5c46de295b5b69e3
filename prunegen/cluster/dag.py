"""Snakemake's view of a study: the files of each cell, what a cell reads, its hash
(Snakemake's params trigger), its resources, and the corrupt cells a run re-runs.

Pure functions of the study; no Snakemake import, so the rules stay thin and this is
tested like the rest of prunegen.
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path

import yaml

from ..records import layout, store
from ..records.layout import COMPLETE_MARKER, RECORD_FILES
from ..study import chains
from ..study.grid import Cell, Study, StudyError, format_noise
from ..study.load import load_study
from ..study.selection import cells as selected_cells

log = logging.getLogger("prunegen")

CELL_PATTERN = "benchmark={benchmark}/arm={arm}/noise={noise}/seed={seed}/level={level}"
CELL_FILES = {Path(f).stem.replace(".", "_"): f for f in (*RECORD_FILES, COMPLETE_MARKER)}
TABLES, FIGURES = layout.TABLES, layout.FIGURES  # the merge and figures rules' outputs

WILDCARD_CONSTRAINTS = {
    "benchmark": r"[A-Za-z0-9_.-]+",
    "arm": r"[a-z][a-z0-9_]*",  # built-in arms and those a study defines (arm_specs' name pattern)
    "noise": r"[0-9.e-]+",
    "seed": r"\d+",
    "level": r"\d+",
}


def load(path: str | Path, results_root: str | None = None, data_root: str | None = None,
         set_text: str | None = None) -> Study:
    overrides = {k: v for k, v in {"results_root": results_root, "data_root": data_root}.items() if v}
    return load_study(path, overrides, set_text)


DEFAULT_STUDY = "workflow/studies/demo.yaml"  # the Snakefile's study without --config study=...


def cell_argv(config: dict, wildcards) -> list[str]:
    """The `prunegen` arguments of a cell's job, as workflow/rules/cells.smk's command has
    them: what a warm worker job (prunegen.cluster.worker) runs for it."""
    return ["run-cell", *shlex.split(job_args(config.get("study", DEFAULT_STUDY), config)),
            *(f"--{k}={wildcards[k]}" for k in ("benchmark", "arm", "level", "noise", "seed"))]


def job_args(path: str | Path, config: dict) -> str:
    """The study arguments of every job's `prunegen` command: the file, and whatever the
    run's --config changed of it, so that a job on another node loads the same study."""
    args = f"--study {shlex.quote(str(path))}"
    for key in ("results_root", "data_root"):
        if config.get(key):
            args += f" --{key.replace('_', '-')} {shlex.quote(str(config[key]))}"
    if config.get("set"):
        args += f" --set {shlex.quote(str(config['set']))}"
    return args


def write_resolved(study: Study) -> Path:
    """The study as this run reads it (overrides applied) beside its results, so that a run
    is reproducible from its own folder: `prunegen status --study <results>/<study>/study.yaml`."""
    path = layout.resolved_study(study.root)
    text = yaml.safe_dump(study.raw, sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        with store.atomic_write(path) as tmp:
            tmp.write_text(text)
    return path


def cell_outputs(root: str | Path) -> dict[str, str]:
    """Output patterns of the cell rule, with the cell's wildcards."""
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



def parent_inputs(study: Study, w) -> list[str]:
    """The completion markers of the cells this one reads (they are written last)."""
    return [str(p.dir / COMPLETE_MARKER) for p in chains.parents(cell(study, w))]


def grid_markers(study: Study, select: str | None = None) -> list[str]:
    """The completion markers of the grid, or of the slice `select` (prunegen.study.selection)."""
    return [str(c.dir / COMPLETE_MARKER) for c in selected_cells(study, select)]


def resources(study: Study, w) -> dict:
    """The study's resources for this cell's job; runtime_min is per cycle, so a job
    asks for it times the cycles it trains (prunegen.study.chains: a downscaled_extended
    cell at level k trains k+1, less what its shared prefix trained)."""
    r = dict(vars(study.benchmarks[w.benchmark].resources))
    r["runtime_min"] *= chains.cycles_to_train(cell(study, w))
    return r


def corrupt_cells(study: Study, select: str | None = None) -> dict[str, str]:
    """Cell folder -> problem, for every corrupt cell of the grid (or of the slice
    `select`), each logged with what the workflow does about it. Writes nothing. The
    check is the cheap one: per cell one cell.json read and a stat per record file; a file
    whose size and mtime match its cell.json is trusted, one whose mtime changed is
    checksummed (a copy that lost its mtimes is not corrupt). So a rewritten file is
    caught here, and a full checksum is left to readers (merge, child cells) and to
    `prunegen status --verify`."""
    found = {}
    for c in selected_cells(study, select):
        state = store.check(c.dir, c.hash)
        if state.state == "corrupt" and (c.dir / COMPLETE_MARKER).exists():  # not set aside already
            found[str(c.dir)] = state.problem
            log.warning("corrupt record %s: %s is re-run with the cells after it in its chain "
                        "(a real run renames its %s to %s first)", state.problem, c.label, COMPLETE_MARKER,
                        layout.SET_ASIDE)
    return found


def set_aside(cell_dir: str | Path) -> None:
    """Rename a corrupt cell's cell.json to cell.json.corrupt: Snakemake finds the cell's
    output missing and re-runs it and the cells after it (as for a deleted cell), and the
    cell reads as corrupt, never complete, until it is. The records stay for inspection
    until the re-run overwrites them."""
    marker = Path(cell_dir) / COMPLETE_MARKER
    os.replace(marker, marker.with_name(layout.SET_ASIDE))
    log.warning("%s: set aside as %s, to be re-run", marker, layout.SET_ASIDE)


def set_aside_all(corrupt: dict[str, str]) -> None:
    for d in corrupt:
        set_aside(d)


def set_aside_markers(corrupt: dict[str, str]) -> list[str]:
    """Dry run: the set-aside markers of the corrupt cells, as targets. (As mere inputs,
    Snakemake would not make them: their consumers look up to date.)"""
    return [str(Path(d) / layout.SET_ASIDE) for d in corrupt]


def set_aside_inputs(corrupt: dict[str, str], study: Study, w) -> list[str]:
    """Dry run: a corrupt cell's job also reads its set-aside marker, which the
    set_aside job makes, so Snakemake lists the cell (and the cells after it) as a job
    whose input is updated."""
    d = cell(study, w).dir
    return [str(d / layout.SET_ASIDE)] if str(d) in corrupt else []
