"""A file system left clean (issue 30 item 4): what a run leaves behind once its jobs succeeded.

Every SLURM job leaves submitit's files in the run's folder (`.snakemake/submitit/<run>/`:
`<job>_submitted.pkl`, per task `<job>_<task>_result.pkl`, `_log.out`, `_log.err`, and one
`<array>_submission.sh` per array); every cell a rule log (`results/<study>/logs/cells/...`);
every cell a worker ran an outcome in its queue (`queue/<pool>/done/<id>.json`). At the
paper grid's 7,644 cells that is tens of thousands of small files on a shared file system.

The rule, one setting (`--prunegen-keep-files-days`, default 0): what belongs to a job or a
cell that SUCCEEDED is removed when the run ends (0), or kept that many days and removed by
the first run that starts after them; submitit's files go, and the cell logs are packed into
one `done-<run>.tar.gz` beside them (a log is still there to read, as one file per run, not
one per cell). What a failure needs to be diagnosed (its job's files, its cell's log) is
never touched. The list of what a run may clean is its folder's `cleanup.json`, written as
the run ends, so a later run removes exactly that and nothing it cannot vouch for.
"""

from __future__ import annotations

import json
import os
import pickle
import tarfile
import time
from pathlib import Path

LIST = "cleanup.json"


def job_files(folder: Path, job_id: str) -> list[Path]:
    """submitit's files of one job (an array task: `123_4`) in `folder`; its array's
    submission script only once no other task of that array has files left."""
    folder = Path(folder)
    mine = list(folder.glob(f"{job_id}_*"))
    if "_" in job_id:
        script = folder / f"{job_id.split('_')[0]}_submission.sh"
        if not [p for p in folder.glob(f"{job_id.split('_')[0]}_*") if p not in mine and p != script]:
            mine.append(script)
    return [p for p in mine if p.exists()]


def succeeded(folder: Path, job_id: str) -> bool:
    """Whether submitit's result of the job (its first task) says success."""
    try:
        with open(Path(folder) / f"{job_id}_0_result.pkl", "rb") as f:
            return pickle.load(f)[0] == "success"
    except Exception:  # missing, being written, or not ours to read: not vouched for
        return False


def pack_logs(logs: list[Path], archive: Path) -> list[Path]:
    """Pack the logs that exist into `archive` (gzip tar, written under a temporary name and
    renamed into place), named by their path relative to its folder; returns those packed.
    The originals are removed by the caller once the archive is in place."""
    logs = [Path(p) for p in logs if Path(p).is_file()]
    if not logs:
        return []
    tmp = archive.with_name(f".{archive.name}.{os.getpid()}.tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for p in logs:
            tar.add(p, arcname=os.path.relpath(p, archive.parent))
    os.replace(tmp, archive)
    return logs


def write_list(run_folder: Path, jobs: list[str], logs: list[str], tasks: list[str]) -> None:
    """What the run may clean: its successful jobs, its successful cells' logs, and its
    queue outcomes (paths) of cells done."""
    path = Path(run_folder) / LIST
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"jobs": jobs, "logs": logs, "tasks": tasks, "written": time.time()}))
    os.replace(tmp, path)


def clean(run_folder: Path) -> dict[str, int]:
    """Remove what the run folder's cleanup.json lists (then the list, marked done). Returns
    counts of files removed, by kind."""
    run_folder = Path(run_folder)
    path = run_folder / LIST
    try:
        todo = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    removed = {"submitit": 0, "logs": 0, "queue": 0}
    for job_id in todo.get("jobs", []):
        for p in job_files(run_folder, job_id):
            p.unlink(missing_ok=True)
            removed["submitit"] += 1
    by_folder: dict[Path, list[Path]] = {}
    for log in todo.get("logs", []):
        by_folder.setdefault(Path(log).parent, []).append(Path(log))
    for folder, logs in by_folder.items():
        archive = _archive_for(folder, run_folder.name)
        for p in pack_logs(logs, archive):
            p.unlink(missing_ok=True)
            removed["logs"] += 1
    for task in todo.get("tasks", []):
        if Path(task).exists():
            Path(task).unlink()
            removed["queue"] += 1
    for link in run_folder.glob(".submission_file_*.sh"):  # submitit's links to the scripts removed above
        if link.is_symlink() and not link.exists():
            link.unlink()
    path.unlink(missing_ok=True)
    (run_folder / "cleaned.json").write_text(json.dumps({**removed, "at": time.time()}))
    return removed


def _archive_for(folder: Path, run: str) -> Path:
    """One archive per run for the logs of a study's cells: they sit in a tree under
    `logs/cells/`, so it goes at that tree's top, `logs/cells/done-<run>.tar.gz`."""
    top = folder
    while top.name != "cells" and top.parent != top:
        top = top.parent
    return (top if top.name == "cells" else folder) / f"done-{run}.tar.gz"


def sweep(submitit_root: Path, keep_days: float, now: float | None = None,
          current: Path | None = None) -> dict[str, int]:
    """Clean every earlier run whose list is older than `keep_days` (a run starting does this)."""
    now = time.time() if now is None else now
    total: dict[str, int] = {}
    for lst in sorted(Path(submitit_root).glob(f"*/{LIST}")):
        if current is not None and lst.parent == current:
            continue
        try:
            written = json.loads(lst.read_text()).get("written", lst.stat().st_mtime)
        except (OSError, ValueError):
            continue
        if now - written >= keep_days * 86400:
            for k, v in clean(lst.parent).items():
                total[k] = total.get(k, 0) + v
    return total
