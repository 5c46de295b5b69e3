"""The warm processes of a local run: `snakemake --cores N` runs its cells through them.

The Snakefile starts a pool as the run starts (its `onstart`, in Snakemake's main process,
local runs only) and sets PRUNEGEN_WARM, so each cell job's `prunegen run-cell` sends its
cell to the pool's queue and waits for it (prunegen.cluster.queue.run_through) instead
of importing torch and loading the data itself. The DAG, the jobs, their logs and their
benchmark files stay as they were; only the process that trains is shared.

Workers are started as cells wait for one, up to one per core (Snakemake runs no more
cells at once than that). A thread in the main process watches them: a worker that dies
(killed, out of memory) fails the cell it held, named, and the next cell gets a fresh
worker. Workers exit when the run ends (`close`, registered for success, error and exit)
or, should the main process be killed, when they see it gone.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .queue import ENV, Queue, exit_words

FOLDER = ".snakemake/prunegen-warm"  # under Snakemake's working directory, one queue per run


class Pool:
    def __init__(self, root: str | os.PathLike, max_workers: int, poll_s: float = 0.1):
        self.q = Queue(root)
        self.max_workers = max(1, int(max_workers))
        self.poll_s = poll_s
        self.procs: dict[str, subprocess.Popen] = {}
        self.started = 0
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="prunegen-warm", daemon=True)
        self._log = open(self.q.root / "workers.log", "a", buffering=1)

    def start(self) -> "Pool":
        os.environ[ENV] = str(self.q.root)  # the cell jobs Snakemake starts from now on inherit it
        self._thread.start()
        atexit.register(self.close)
        return self

    def _spawn(self) -> None:
        self.started += 1
        name = f"local-{self.started}"
        env = {k: v for k, v in os.environ.items() if k != ENV}
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "prunegen.cli", "worker", "--queue", str(self.q.root), "--name", name,
             "--parent", str(os.getpid()), "--idle-s", "1e9"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def _supervise(self) -> None:
        while not self._closing.is_set():
            for name, proc in list(self.procs.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del self.procs[name]
                self.q.orphans(name, f"its warm process ({name}, pid {proc.pid}) ended ({exit_words(rc)}) while running "
                               "it: killed, or out of memory? See " + str(self.q.root / "workers.log"),
                               put_back=False)
            busy = sum(len(v) for v in self.q.claims().values())
            waiting = len(self.q.todo())
            # one worker per waiting cell, counting those not yet busy (starting, or between cells)
            if waiting > len(self.procs) - busy and len(self.procs) < self.max_workers:
                self._spawn()
            self._closing.wait(self.poll_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the workers (a running cell is checkpointed first) and remove the queue."""
        if self._closing.is_set():
            return
        self._closing.set()
        self.q.stop()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        os.environ.pop(ENV, None)
        self._log.close()
        self.q.remove()


_pool: Pool | None = None


def start_local(workflow, config: dict) -> Pool | None:
    """The Snakefile's onstart: a pool for a local, real run of Snakemake's main process,
    unless `--config warm=false` (then every cell job is a process of its own, as before)."""
    global _pool
    warm = str(config.get("warm", True)).lower() not in ("false", "0", "no", "off")
    if not warm or not workflow.local_exec or workflow.dryrun or not workflow.is_main_process or _pool:
        return _pool
    _pool = Pool(Path(FOLDER).absolute() / str(os.getpid()), workflow.cores).start()
    return _pool


def close_local() -> None:
    """The Snakefile's onsuccess and onerror."""
    if _pool is not None:
        _pool.close()
