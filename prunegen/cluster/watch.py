"""`prunegen status --watch`: the grid joined with the study's SLURM jobs, live.

Each cell is in one of five states, in the order it goes through them:

- queued: not complete and no job holds it: it waits for its parents or for a slot;
- pending: its SLURM job waits, with SLURM's reason (Priority, Resources, ...);
- running: a job (or a local process) holds the cell; the epoch comes from its checkpoint;
- completed: its records are complete (they win over anything SLURM says);
- failed: its latest job ended without complete records; the job's log is named.

A cell in a warm worker job (docs/cluster.md, section 5) shows its worker's job while the
worker runs it; the executor adds a line when such a cell fails or goes back to the queue.
Jobs come from the `jobs.jsonl` that the executor plugin appends to in each run's folder
(`.snakemake/submitit/<time>-<run id>/`): SLURM job id, the cell folders and log paths
(an array's `--comment` names the batch, not each task). The latest submission of a cell
wins, so a retried cell shows its new job. SLURM is asked through prunegen.cluster.slurm's
watcher (one sacct call per refresh). Without SLURM, or without jobs, the local records
say what there is: a cell whose lock a live process holds is running.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from ..records import layout, lock, store
from ..study.chains import cycles_to_train
from ..study.grid import Cell, Study
from .joblog import Job, read_jobs

WATCH_STATES = ("queued", "pending", "running", "completed", "failed")


@dataclass(frozen=True)
class CellView:
    cell: Cell
    state: str          # one of WATCH_STATES
    detail: str = ""    # pending: SLURM's reason; failed: what and where the log is
    job: str = ""       # the SLURM job id, when there is one
    epochs_done: int = 0
    epochs: int = 0
    wall_seconds: float | None = None  # completed: its cell.json's (the ETA's measure)



def epochs_done(cell: Cell) -> int:
    """Epochs this cell's job has trained, from its per-epoch checkpoint (0 without one)."""
    path = cell.dir / layout.CHECKPOINT_FILE
    if not path.exists():
        return 0
    import torch  # lazily: only for the few cells that run, so `status --watch` starts fast

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # being replaced this instant, or corrupt: the cell will say so itself
        return 0
    return int(state.get("cycle_pos", 0)) * cell.benchmark.train.epochs + int(state.get("epoch", 0))


def cell_log_path(cell: Cell) -> Path:
    """The cell rule's log (workflow/rules/cells.smk): run-cell's output, its error included."""
    return layout.cell_log(cell.study.root, cell.relpath)


Poll = Callable[[list[str]], dict]


def look(study: Study, cells: list[Cell], jobs: dict[str, Job], poll: Poll | None) -> list[CellView]:
    """Every cell's state now. `poll` maps job ids to prunegen.cluster.slurm.status.Status (None: no SLURM)."""
    checks = {c.relpath: store.check(c.dir, c.hash) for c in cells}
    todo = [c for c in cells if checks[c.relpath].state != "complete"]
    job_of = {c.relpath: jobs.get(str(c.dir.absolute())) for c in todo}
    ids = sorted({j.job_id for j in job_of.values() if j is not None})
    slurm = poll(ids) if poll is not None and ids else {}
    out = []
    for c in cells:
        epochs = cycles_to_train(c) * c.benchmark.train.epochs
        if checks[c.relpath].state == "complete":
            meta = checks[c.relpath].meta or {}
            out.append(CellView(c, "completed", epochs_done=epochs, epochs=epochs,
                                wall_seconds=meta.get("wall_seconds")))
            continue
        job, st = job_of[c.relpath], None
        if job is not None:
            st = slurm.get(job.job_id)
        if job is not None and job.outcome == "failed":  # a cell of a worker job that goes on
            cell_log = cell_log_path(c)
            out.append(CellView(c, "failed", job.detail + (f"; cell log {cell_log}" if cell_log.exists() else ""),
                                job.job_id, epochs_done(c), epochs))
        elif job is not None and job.outcome == "queued" and lock.live_holder(c.dir) is None:
            out.append(CellView(c, "queued", f"back in the queue: {job.detail}", "", epochs_done(c), epochs))
        elif st is not None and st.state in ("PENDING", "UNKNOWN") and st.outcome == "active":
            reason = st.reason if st.state == "PENDING" else "submitted; not in SLURM's accounting yet"
            out.append(CellView(c, "pending", (reason or "waiting") + _retry(job), job.job_id, 0, epochs))
        elif st is not None and st.outcome == "active":
            out.append(CellView(c, "running", st.state.lower() + _retry(job), job.job_id, epochs_done(c), epochs))
        elif st is not None:  # ended without complete records
            log_path = job.stderr or job.stdout
            what = st.state + (f" ({st.reason})" if st.reason else "")
            cell_log = cell_log_path(c)  # the rule's log: where run-cell's own error is
            where = f"log {log_path}" + (f", cell log {cell_log}" if cell_log.exists() else "")
            out.append(CellView(c, "failed", f"{what}; {where}", job.job_id, epochs_done(c), epochs))
        elif lock.live_holder(c.dir) is not None:
            out.append(CellView(c, "running", "local", "", epochs_done(c), epochs))
        else:
            out.append(CellView(c, "queued", checks[c.relpath].state, "", epochs_done(c), epochs))
    return out


def _retry(job: Job) -> str:
    """A retried job: why the one before failed and what the retry changed."""
    return f"; a retry after {job.retried}" if job.retried else ""


def seconds_per_epoch(views: list[CellView]) -> dict[str, float]:
    """Per benchmark: measured wall seconds per epoch over its completed cells."""
    wall: dict[str, list[float]] = {}
    for v in views:
        if v.state == "completed" and v.wall_seconds and v.epochs:
            w = wall.setdefault(v.cell.benchmark.name, [0.0, 0.0])
            w[0] += float(v.wall_seconds)
            w[1] += v.epochs
    return {b: s / e for b, (s, e) in wall.items() if e}


def eta_seconds(views: list[CellView], per_epoch: dict[str, float]) -> float | None:
    """Epochs left times measured seconds per epoch, spread over the cells running now
    (None while a benchmark with work left has no completed cell to measure)."""
    left = [v for v in views if v.state in ("queued", "pending", "running")]
    if not left:
        return 0.0
    if any(v.cell.benchmark.name not in per_epoch for v in left):
        return None
    work = sum((v.epochs - v.epochs_done) * per_epoch[v.cell.benchmark.name] for v in left)
    return work / max(1, sum(v.state == "running" for v in views))


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def render(views: list[CellView], per_epoch: dict[str, float], now: str, slurm: bool) -> str:
    df = pd.DataFrame({"benchmark": [v.cell.benchmark.name for v in views],
                       "arm": [v.cell.arm for v in views], "state": [v.state for v in views]})
    table = (pd.crosstab([df["benchmark"], df["arm"]], df["state"])
             .reindex(columns=list(WATCH_STATES), fill_value=0).reset_index())
    table.columns.name = None
    lines = [f"prunegen status --watch  {now}  ({'SLURM jobs and local records' if slurm else 'local records'})",
             table.to_string(index=False), ""]
    for v in views:
        job = f" (SLURM job {v.job})" if v.job else ""
        if v.state == "running":
            lines.append(f"running  {v.cell.label}: epoch {v.epochs_done}/{v.epochs}{job}")
        elif v.state == "pending":
            lines.append(f"pending  {v.cell.label}: {v.detail}{job}")
        elif v.state == "failed":
            lines.append(f"failed   {v.cell.label}: {v.detail}{job}")
    counts = {s: sum(v.state == s for v in views) for s in WATCH_STATES}
    eta = eta_seconds(views, per_epoch)
    eta_text = ("done" if eta == 0 else "ETA unknown until a cell of each benchmark completes" if eta is None
                else f"ETA {_duration(eta)} at the measured epoch times")
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()) + f"; {eta_text}")
    return "\n".join(lines) + "\n"


def active(views: list[CellView]) -> bool:
    return any(v.state in ("pending", "running") for v in views)


def slurm_poll() -> Poll | None:
    """prunegen.cluster.slurm's watcher when SLURM's commands are here, else None."""
    if shutil.which("sacct") is None and shutil.which("squeue") is None:
        return None
    from .slurm.status import StatusWatcher  # lazily: a local watch never needs SLURM's side

    return StatusWatcher().poll


def watch(study: Study, cells: list[Cell], *, workdir: Path, interval_s: float = 5.0,
          patience_s: float = 60.0, poll: Poll | None = None, out=None,
          clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> list[CellView]:
    """Print the grid every `interval_s` until nothing is left: every cell completed or
    failed, or no job pending or running for `patience_s` (cells still queued then wait
    for a Snakemake that is not running: say so). Returns the last views."""
    out = out or sys.stdout
    idle_since = None
    while True:
        views = look(study, cells, read_jobs(workdir), poll)
        text = render(views, seconds_per_epoch(views), time.strftime("%H:%M:%S"), poll is not None)
        out.write(text + "\n")
        out.flush()
        if not any(v.state in ("queued", "pending", "running") for v in views):
            return views
        if active(views):
            idle_since = None
        else:
            idle_since = clock() if idle_since is None else idle_since
            if clock() - idle_since >= patience_s:
                out.write(f"nothing pending or running for {patience_s:.0f} s: the queued cells wait for a "
                          "Snakemake run (start one, e.g. snakemake --profile profiles/slurm)\n")
                return views
        sleep(interval_s)
