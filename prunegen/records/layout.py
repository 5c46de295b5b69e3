"""Every path and file name of a study's results, in one place (OpenLTH's `paths.py`).

    <results_root>/<study>/
      cells/benchmark=<b>/arm=<a>/noise=<f>/seed=<s>/level=<k>/   a cell (Cell.dir, prunegen.study.grid)
        cell.json            the completion marker, written last: hyperparameters, checksums
        history.parquet  examples.parquet  summary.parquet  model.pt  mask.pt
        rewind.pt            dense only, when an arm rewinds weights to it
        removed.parquet      TIE cells only: the examples they left out
        checkpoint.pt        while the cell trains; removed when it completes
        .lock                while a process writes the cell (prunegen.records.lock)
        cell.json.corrupt    a corrupt cell's marker, set aside by the workflow to re-run it
      logs/cells/<cell>.log  logs/merge.log  logs/figures.log
      benchmarks/cells/<cell>.tsv (Snakemake's benchmark file)  <cell>.gpu.json (NVML samples)
                             <cell>.warm.json (its cost, when a warm process ran it)
      tables/<name>.parquet + .csv     merged by prunegen.analysis.merge
      figures/<name>.png + .pdf        drawn by prunegen.analysis.figures
      calibration.json                 prunegen plan --calibrate
      study.yaml                       the study as the last run read it (overrides applied)
    .snakemake/submitit/<time>-<run>/jobs.jsonl   the SLURM jobs of a run (the executor plugin)

The cell folder's keys (hive-style) are a cell's identity, so the folder itself is
`Cell.dir`; everything else a study writes is named here. Torch-free.
"""

from __future__ import annotations

from pathlib import Path

HISTORY_FILE, EXAMPLES_FILE, SUMMARY_FILE = "history.parquet", "examples.parquet", "summary.parquet"
MODEL_FILE, MASK_FILE = "model.pt", "mask.pt"
RECORD_FILES = (HISTORY_FILE, EXAMPLES_FILE, SUMMARY_FILE, MODEL_FILE, MASK_FILE)  # every cell writes these
REWIND_FILE = "rewind.pt"  # dense's weights at the rewind epoch, when some arm rewinds to them
REMOVED_FILE = "removed.parquet"  # a TIE cell's removed examples
COMPLETE_MARKER = "cell.json"  # written last: a folder without it is not a result
SET_ASIDE = "cell.json.corrupt"  # the marker of a corrupt cell, renamed by the workflow to re-run it
CHECKPOINT_FILE = "checkpoint.pt"
LOCK_FILE = ".lock"

SUBMITIT_FOLDER = ".snakemake/submitit"  # under Snakemake's working directory: one folder per run
JOBS_FILE = "jobs.jsonl"  # in each run's folder

# The study's merged tables (prunegen.analysis.merge) and figures (prunegen.analysis.figures):
# the workflow's outputs, named here so that the cluster side knows them without the analysis.
TABLES = ("summary", "history", "subgroups", "headline", "memorization", "optimal", "subgroup_headline", "compute")
FIGURES = ("test_error", "train_loss", "memorization", "decomposition", "optimal_sparsity", "completeness")


def tables_dir(root: Path) -> Path:
    """Where the merged tables of the study at `root` (results/<study>) go."""
    return Path(root) / "tables"


def figures_dir(root: Path) -> Path:
    return Path(root) / "figures"


def cell_log(root: Path, relpath: str) -> Path:
    """The log of a cell's job (workflow/rules/cells.smk writes it)."""
    return Path(root) / "logs" / "cells" / f"{relpath}.log"


def benchmark_tsv(root: Path, relpath: str) -> Path:
    """Snakemake's benchmark file of a cell's job (workflow/rules/cells.smk)."""
    return Path(root) / "benchmarks" / "cells" / f"{relpath}.tsv"


def warm_json(root: Path, relpath: str) -> Path:
    """What a cell cost in a warm process (prunegen.cluster.worker), beside its benchmark file,
    which then measured only the job that waited for it."""
    return Path(root) / "benchmarks" / "cells" / f"{relpath}.warm.json"


def gpu_json(root: Path, relpath: str) -> Path:
    """The NVML samples of a cell job that ran on a GPU, beside its benchmark file."""
    return Path(root) / "benchmarks" / "cells" / f"{relpath}.gpu.json"


def calibration(root: Path) -> Path:
    return Path(root) / "calibration.json"


def resolved_study(root: Path) -> Path:
    """The study a run read (its file with the run's overrides applied), beside its results."""
    return Path(root) / "study.yaml"
