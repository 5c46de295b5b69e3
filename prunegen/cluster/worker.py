"""A warm process: runs cell after cell from a queue (prunegen.cluster.queue), with torch
imported, datasets loaded and (on a GPU) the CUDA context made once, not once per cell.

    prunegen worker --queue DIR [--name NAME] [--idle-s 120]

Each cell runs exactly as `prunegen run-cell` would run it in a process of its own: the
same function, the same lock, checksums and checkpoints, its log in its own file, its
thread count set for it. What the process carries from cell to cell is only what does
not change a result: imported modules, the loaded datasets (prunegen.engine.data), the
CUDA context and allocator cache. A cell that raises fails alone: its error goes to its
log and its result, and the worker takes the next cell.

Signals: SIGTERM or SIGUSR2 (SLURM's preemption and time-limit warnings) stop the cell
at its next step, after its checkpoint; the worker puts the cell back in the queue for
another worker to resume, and exits. A cancel file (the cell's own job was killed)
stops that cell the same way and records it as stopped. Locally the worker exits when
the process that started it is gone; anywhere, when the queue says stop or it has been
idle `--idle-s` seconds.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import torch

from ..engine import allocator, data, stopping  # a worker is the process that trains
from ..records import layout, store
from .queue import ENV, Queue, exit_words


class _CellLog(logging.Handler):
    """The root logger's one handler in a worker: writes to the running cell's log."""

    def __init__(self):
        super().__init__()
        self.stream: io.TextIOBase | None = None
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def emit(self, record):
        if self.stream is not None:
            self.stream.write(self.format(record) + "\n")
            self.stream.flush()


def default_name() -> str:
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ.get("SLURM_JOB_ID")
    # A SLURM worker is named by its job, so the same job requeued finds its own cells again.
    return f"slurm-{job}" if job else f"{socket.gethostname()}-{os.getpid()}"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Worker:
    """`run(argv, on_cell) -> exit code` runs one cell's `prunegen` arguments in this
    process: prunegen.cli.main, which passes itself in (the cluster side does not import
    the command line above it)."""

    def __init__(self, queue: Queue, name: str, run, idle_s: float = 120.0, parent_pid: int | None = None,
                 poll_s: float = 0.05):
        self.q, self.name, self.idle_s, self.parent_pid, self.poll_s = queue, name, idle_s, parent_pid, poll_s
        self.run_argv = run
        self.cells = 0
        self.log = _CellLog()

    def serve(self) -> int:
        os.environ.pop(ENV, None)  # the cells it runs run here, not through a queue again
        allocator.keep_freed_memory()
        data.keep_loaded(2)  # a study's cells read one or two datasets
        stopping.install()
        root = logging.getLogger()
        root.handlers[:] = [self.log]
        root.setLevel(logging.INFO)
        print(f"[prunegen.worker] {self.name}: pid {os.getpid()} on {socket.gethostname()}, queue {self.q.root}",
              flush=True)
        mine = self.q.claims().get(self.name, [])  # a requeued SLURM job: its cells first
        for tid in mine:
            self.q.release(self.name, tid)
        idle_since = time.monotonic()
        while not self.q.stopping() and stopping.requested() is None and self._parent_alive():
            task = self.q.claim(self.name)
            if task is None:
                if time.monotonic() - idle_since > self.idle_s:
                    break
                time.sleep(self.poll_s)
                continue
            self.run(task)
            idle_since = time.monotonic()
        sig = stopping.requested()
        print(f"[prunegen.worker] {self.name}: {self.cells} cell(s) run; exiting"
              + (f" on {signal.Signals(sig).name}" if sig else ""), flush=True)
        return 128 + sig if sig else 0

    def _parent_alive(self) -> bool:
        return self.parent_pid is None or os.getppid() == self.parent_pid

    def run(self, task: dict) -> None:
        tid = task["id"]
        log_path = Path(task.get("log") or self.q.log_path(tid))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(int(task.get("threads", 1)))
        done = threading.Event()
        watch = threading.Thread(target=self._watch_cancel, args=(tid, done), daemon=True)
        watch.start()
        cell_box: list = []
        t0, c0, started = time.perf_counter(), time.process_time(), time.time()
        with open(log_path, "a", buffering=1) as f:
            self.log.stream = f
            print(f"[prunegen.worker] cell {self.cells + 1} of worker {self.name} (pid {os.getpid()})", file=f)
            try:
                with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                    rc = self.run_argv(task["argv"], on_cell=lambda study, cell: cell_box.append((study, cell)))
            except SystemExit as e:  # argparse: bad arguments
                rc = e.code if isinstance(e.code, int) else 2
            except Exception:  # a bug in the cell's run: this cell fails, the worker goes on
                traceback.print_exc(file=f)
                rc = 1
            finally:
                self.log.stream = None
                done.set()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        sig = stopping.requested()
        cancelled = self.q.cancelled(tid)
        self.cells += 1
        gc.collect()
        if sig is not None and not cancelled:  # this worker is stopping: another resumes the cell
            self.q.release(self.name, tid)
            return
        cost = {"process": "warm", "worker": self.name, "pid": os.getpid(), "cells_before": self.cells - 1,
                "started": started, "ended": time.time(),
                "job_seconds": seconds, "cpu_seconds": cpu, "rss_mb": rss_mb(),
                "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if rc == 0 and cell_box:
            study, cell = cell_box[0]
            store.write_json(cost, layout.warm_json(study.root, cell.relpath))
            if task.get("benchmark"):  # no Snakemake job measured it (a worker job on SLURM): its file here
                write_benchmark_tsv(Path(task["benchmark"]), cost)
        error = None if rc == 0 else _last_error(log_path)
        self.q.finish(self.name, tid, {"rc": rc, "error": error, "logged": True, "stopped": cancelled, **cost})
        if cancelled:
            stopping.reset()  # that cell's stop, not this worker's

    def _watch_cancel(self, tid: str, done: threading.Event) -> None:
        while not done.wait(0.2):
            if self.q.cancelled(tid) or not self._parent_alive():
                stopping.ask(signal.SIGTERM)
                return


def write_benchmark_tsv(path: Path, cost: dict) -> None:
    """Snakemake's benchmark file (its columns; what a warm process cannot tell apart for
    one cell is NA), atomically."""
    s, cpu = cost["job_seconds"], cost["cpu_seconds"]
    row = [f"{s:.4f}", f"{int(s) // 3600}:{int(s) % 3600 // 60:02d}:{int(s) % 60:02d}", f"{cost['max_rss_mb']:.2f}",
           "NA", "NA", "NA", "NA", "NA", f"{100 * cpu / s if s else 0:.2f}", f"{cpu:.2f}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with store.atomic_write(path) as tmp:
        tmp.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                       + "\t".join(row) + "\n")


def _last_error(log: Path) -> str:
    """The line a failed cell's log ends on (its error), for the one-line report."""
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "failed"
    return lines[-1][:500] if lines else "failed"


def serve(args, run) -> int:
    """`prunegen worker`'s body (prunegen.cli)."""
    name = args.name or default_name()
    if args.slots > 1:
        return run_slots(Queue(args.queue), name, args.slots, args.idle_s, mps=args.mps)
    return Worker(Queue(args.queue), name, run, args.idle_s, args.parent).serve()


def run_slots(q: Queue, name: str, slots: int, idle_s: float, mps: str = "auto") -> int:
    """Several cells at once in one job, sharing its GPU: `slots` worker processes (named
    `<name>-<i>`, so a requeued job finds its cells again), under CUDA MPS where the job has
    a GPU and the node has MPS (`mps`: auto, on, off), time-sliced where not. A worker that
    dies fails the cell it held; the others go on. SIGTERM and SIGUSR2 are passed on."""
    env = dict(os.environ)
    daemon = _start_mps(env, mps)
    procs = [subprocess.Popen([sys.executable, "-m", "prunegen.cli", "worker", "--queue", str(q.root),
                               "--name", f"{name}-{i}", "--idle-s", f"{idle_s:g}"], env=env)
             for i in range(slots)]
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, lambda signum, frame: [p.send_signal(signum) for p in procs if p.poll() is None])
    print(f"[prunegen.worker] {name}: {slots} slots (pids {', '.join(str(p.pid) for p in procs)}), "
          f"{'CUDA MPS' if daemon else 'no MPS'}", flush=True)
    codes = [p.wait() for p in procs]
    for i, rc in enumerate(codes):
        if rc < 0 or rc not in (0, 128 + signal.SIGTERM, 128 + signal.SIGUSR2):
            q.orphans(f"{name}-{i}", f"its worker process {name}-{i} ended ({exit_words(rc)}) while running it: killed, "
                      "or out of memory?", put_back=False)
    if daemon:
        subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True, env=env, timeout=30)
    signals = [rc for rc in codes if rc in (128 + signal.SIGTERM, 128 + signal.SIGUSR2)]
    return signals[0] if signals else 0


def _start_mps(env: dict, mode: str) -> bool:
    """Start an MPS control daemon private to this job (its pipe and log folders under the
    job's temporary folder); False where there is no GPU, no MPS, or `mode` is off."""
    if mode == "off" or not env.get("CUDA_VISIBLE_DEVICES") or shutil.which("nvidia-cuda-mps-control") is None:
        if mode == "on":
            raise SystemExit("prunegen worker --mps on: no GPU in this job or no nvidia-cuda-mps-control here")
        return False
    base = Path(env.get("SLURM_TMPDIR") or env.get("TMPDIR") or "/tmp") / f"prunegen-mps-{os.getpid()}"
    for sub, var in (("pipe", "CUDA_MPS_PIPE_DIRECTORY"), ("log", "CUDA_MPS_LOG_DIRECTORY")):
        (base / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(base / sub)
    p = subprocess.run(["nvidia-cuda-mps-control", "-d"], env=env, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        if mode == "on":
            raise SystemExit(f"prunegen worker --mps on: nvidia-cuda-mps-control -d failed: {p.stderr.strip()}")
        print(f"[prunegen.worker] MPS did not start ({p.stderr.strip()}): time-sliced", flush=True)
        for var in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"):
            env.pop(var, None)
        return False
    return True
