"""Warm worker jobs on SLURM: cells are queued (prunegen.cluster.queue) on the shared file
system, and a few long-lived SLURM jobs each run cell after cell from the queue
(prunegen.cluster.worker), so torch, the data and the CUDA context are loaded once per
job, not once per cell.

Why pull, not batches handed out at submission: a study's cells become ready a few at a
time (each level waits for the one before), so a batch of the cells ready at one moment
is small, and it would hold every cell until its slowest is done. A worker takes the
next ready cell the moment it is free, and a cell is reported (and its children become
ready) as soon as it is done. Cells per job is then the study's cells over the workers.

One queue per resource request (cells asking for other GPUs, CPUs, memory or time go to
other workers). What the engine guarantees for a cell holds unchanged: the lock, the
checksums, the checkpoints. What a worker job's end means for the cells it held:

- it ended after NODE_FAIL, PREEMPTED, BOOT_FAIL or a time-out: its cells go back in
  the queue and another worker resumes them from their checkpoints (at most
  `max_attempts` lost workers per cell: a cell that brings down every node it runs
  on fails);
- it ended OUT_OF_MEMORY: the cell it held is queued again for workers that ask
  `oom_factor` times the memory, up to `mem_ceiling_mb` (default 4 times the cell's own
  request); past it, the cell fails, saying so;
- it ended otherwise (FAILED, CANCELLED): the cell it held fails, naming the job and its
  log; the other cells are untouched.

No Snakemake here: the executor plugin maps Snakemake's jobs to tasks and back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..queue import Queue
from . import retry
from .request import Request

PUT_BACK = ("NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "TIMEOUT", "REQUEUED", "DEADLINE")


def job_of(worker: str) -> str:
    """The SLURM job of a worker's queue name: `slurm-<job>` or, for a slot, `slurm-<job>-<i>`."""
    return worker.removeprefix("slurm-").split("-")[0]


def cause(result: dict) -> str:
    """Why a cell failed, from its outcome in the queue: "cell" for an error of the cell's
    own code or data (the engine's one-line errors exit 2; a Python traceback exits 1),
    which would fail the same way again; "device" for a CUDA error (the node's GPU may be
    at fault: worth another try); "worker" when its worker died under it."""
    if result.get("workers_lost"):
        return "worker"
    if "CUDA" in str(result.get("error") or ""):
        return "device"
    return "cell" if result.get("rc") in (1, 2) else "worker"


@dataclass
class WorkerJob:
    job_id: str
    stdout: str = ""
    stderr: str = ""


@dataclass
class Pool:
    """The queue and the worker jobs of one resource request."""
    request: Request
    queue: Queue
    workers: dict[str, WorkerJob] = field(default_factory=dict)  # live worker jobs by SLURM id

    def busy(self) -> int:
        """Cells held by this pool's live worker jobs (a job with slots holds several)."""
        return sum(len(ids) for name, ids in self.queue.claims().items() if job_of(name) in self.workers)

    def wanted(self, room: int, slots: int = 1) -> int:
        """How many more worker jobs to start: enough for the waiting cells that the workers
        pending, starting or between cells cannot take, within `room`."""
        spare = len(self.workers) * slots - self.busy()
        return max(0, min(room, math.ceil((len(self.queue.todo()) - spare) / slots)))


class Pools:
    def __init__(self, folder: Path, max_workers: int, idle_s: float = 60.0, python: str | None = None,
                 runtime_min: int | None = None, slots: int = 1, mps: str = "auto",
                 oom_factor: float = 1.5, mem_ceiling_mb: int | None = None):
        self.oom_factor = float(oom_factor)
        self.mem_ceiling_mb = mem_ceiling_mb
        self.slots = max(1, int(slots))
        self.mps = mps
        self.folder = Path(folder)
        self.max_workers = int(max_workers)
        self.idle_s = idle_s
        self.python = python or sys.executable
        self.runtime_min = runtime_min
        self.pools: dict[Request, Pool] = {}
        self.cells_done = 0
        self.all_jobs: list[WorkerJob] = []

    @staticmethod
    def key(request: Request) -> Request:
        return dataclasses.replace(request, comment="")

    def pool(self, request: Request) -> Pool:
        key = self.key(request)
        if key not in self.pools:
            digest = hashlib.sha256(repr(key).encode()).hexdigest()[:10]
            self.pools[key] = Pool(key, Queue(self.folder / "queue" / digest))
        return self.pools[key]

    def put(self, request: Request, task: dict) -> tuple[Pool, str]:
        pool = self.pool(request)
        return pool, pool.queue.put(task)

    def live(self) -> int:
        return sum(len(p.workers) for p in self.pools.values())

    def worker_ids(self) -> list[str]:
        return [wid for p in self.pools.values() for wid in p.workers]

    def worker(self, job_id: str) -> tuple[Pool, WorkerJob] | None:
        """The live worker job `job_id` and its pool, or None."""
        return next(((p, p.workers[job_id]) for p in self.pools.values() if job_id in p.workers), None)

    def to_start(self) -> list[tuple[Pool, int]]:
        room = self.max_workers - self.live()
        out = []
        for pool in self.pools.values():
            n = pool.wanted(room, self.slots)
            if n:
                out.append((pool, n))
                room -= n
        return out

    def worker_request(self, pool: Pool) -> Request:
        """A worker job asks what its cells ask, times its slots for CPUs and memory (its
        cells share its GPUs), for at least `runtime_min` minutes (it runs many cells; at its
        time limit it checkpoints its cells and hands them back)."""
        r = pool.request
        minutes = max(r.runtime_min or 0, self.runtime_min or 0) or None
        return dataclasses.replace(r, runtime_min=minutes, comment="prunegen-worker",
                                   cpus=r.cpus * self.slots, mem_mb=r.mem_mb * self.slots if r.mem_mb else r.mem_mb)

    def command(self, pool: Pool) -> str:
        slots = f" --slots {self.slots} --mps {self.mps}" if self.slots > 1 else ""
        return f"{self.python} -m prunegen.cli worker --queue {pool.queue.root} --idle-s {self.idle_s:g}{slots}"

    def started(self, pool: Pool, jobs: list[WorkerJob]) -> None:
        for job in jobs:
            pool.workers[job.job_id] = job
            self.all_jobs.append(job)

    def ran(self) -> int:
        """Worker jobs that started: submitit writes a job's log as it starts."""
        return sum(1 for job in self.all_jobs if Path(job.stdout).exists())

    def ended(self, job_id: str, state: str, success: bool) -> tuple[list[dict], list[dict]]:
        """A worker job is over: what it still held goes back, moves to workers with more
        memory (OUT_OF_MEMORY), or fails. Returns the tasks put back or moved (each with
        `why`) and the tasks failed."""
        found = self.worker(job_id)
        if found is None:
            return [], []
        pool, job = found
        del pool.workers[job_id]
        names = [n for n in pool.queue.claims() if job_of(n) == job_id]  # the job, or its slots
        why = (f"its worker job {job_id} ended {state} while running it (submitit log: {job.stdout}, "
               f"{job.stderr})")
        back, failed = [], []
        bigger = self.more_memory(pool.request) if state == "OUT_OF_MEMORY" else None
        if bigger is not None and not names:
            # killed before it held a cell (a worker alone passes the request): every cell
            # still waiting here would meet the same end, so they all move
            while (task := pool.queue.claim(f"executor-{job_id}")) is not None:
                back.append({**task, "why": self.move(pool, f"executor-{job_id}", task["id"], task, bigger)})
        for name in names:
            held = {tid: pool.queue.claimed_task(name, tid) or {} for tid in pool.queue.claims().get(name, [])}
            if bigger is not None:  # the same cell again, where it has more memory
                for tid, task in held.items():
                    back.append({**task, "why": self.move(pool, name, tid, task, bigger)})
                continue
            if state == "OUT_OF_MEMORY" and pool.request.mem_mb:
                why += (f"; {pool.request.mem_mb} MB times the retry factor would pass the ceiling "
                        "(prunegen-mem-ceiling-mb): not retried")
            lost = set(pool.queue.orphans(name, why, put_back=success or state in PUT_BACK))
            back += [{**t, "why": why} for tid, t in held.items() if tid not in lost]
            failed += [{**t, "why": why} for tid, t in held.items() if tid in lost]
        return back, failed

    def more_memory(self, request: Request) -> Request | None:
        """The request with `oom_factor` times its memory, or None past `mem_ceiling_mb` (or
        without a memory request to grow)."""
        mem = retry.more_memory(request.mem_mb, self.oom_factor, self.mem_ceiling_mb)
        return dataclasses.replace(request, mem_mb=mem) if mem else None

    def move(self, pool: Pool, worker: str, tid: str, task: dict, request: Request) -> str:
        """Queue a held task again for `request`'s workers; its old id's outcome says where it
        went (the executor follows it). Returns why, for the log."""
        target = self.pool(request)
        new = target.queue.put({k: v for k, v in task.items() if k != "id"} | {
            "oom": [*task.get("oom", []), pool.request.mem_mb]})
        why = (f"out of memory at {pool.request.mem_mb} MB in worker job {job_of(worker)}: "
               f"again with {request.mem_mb} MB")
        pool.queue.finish(worker, tid, {"rc": None, "moved_to": {"task": new, "queue": str(target.queue.root)},
                                        "error": why})
        return why

    def stop(self) -> None:
        for pool in self.pools.values():
            pool.queue.stop()

    def summary(self) -> str:
        """Cells done over the worker jobs that started (the others were cancelled, pending)."""
        jobs, ran = len(self.all_jobs), self.ran()
        per = self.cells_done / ran if ran else math.nan
        return (f"{self.cells_done} cell(s) in {ran} worker job(s) that ran ({per:.1f} cells per job; "
                f"{jobs} submitted)")
