"""A requeueable shell job: one Snakemake job command, run in a subprocess by submitit.

`ShellJob` is submitit's `Checkpointable`: on time-out or preemption submitit calls its
`checkpoint` hook, which stops the command and requeues the same command. The engine
resumes a cell from its checkpoint by itself, so a requeue only has to run the command
again; a time-out after no progress (no new checkpoint in the job's cell folders) is not
requeued forever.

In a multi-task job (a data-parallel cell: submitit's `tasks_per_node`, `nodes`), every task
runs this job: each exports torch's env:// variables for its rank (prunegen.cluster.ranks),
task 0 runs the command (the cell's `prunegen run-cell`, rank 0) and the others run
`prunegen rank`, which joins rank 0 and takes the cell from it. Locally the same job runs on
submitit's LocalExecutor; there a TERM reaching a task is passed on to its command.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Sequence

import submitit
import submitit.helpers

from .. import ranks
from ..queue import exit_words
from .request import SlurmError


class ShellJob(submitit.helpers.Checkpointable):
    """Runs ``command`` with ``bash -c`` in ``cwd``; fails if the command fails.

    Checkpointable: on
    time-out/preemption submitit calls :meth:`checkpoint`, which stops the command
    and returns the same job, which submitit requeues. Nothing of the run is kept:
    what makes the rerun resume is the engine's own per-epoch checkpoint.
    """

    def __init__(self, command: str, cwd: str | os.PathLike, label: str = "",
                 stop_grace_s: float = 20.0, progress_dirs: Sequence[str | os.PathLike] = (),
                 time_limit_min: int | None = None) -> None:
        self.command = command
        self.cwd = str(cwd)
        self.label = label
        self.stop_grace_s = stop_grace_s
        # Where the command's progress shows (a cell's folder: its per-epoch checkpoint.pt).
        # After a time-out the job is requeued only if a file there changed during the run
        # that timed out: the remaining work decides how many requeues, not a fixed count.
        self.progress_dirs = [str(d) for d in progress_dirs]
        self.time_limit_min = time_limit_min
        self.attempts = 0  # runs of the command in this SLURM job, requeues included
        self.idle_timeouts = 0  # consecutive runs that timed out without progress
        self.max_idle_timeouts = 2
        self._proc: subprocess.Popen | None = None
        self._started = 0.0
        self._signature: tuple = ()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_proc"] = None  # a running process does not travel with the requeue
        return state

    def __call__(self) -> int:
        self.attempts += 1
        job_id = os.environ.get("SLURM_ARRAY_JOB_ID")
        job_id = f"{job_id}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if job_id else os.environ.get("SLURM_JOB_ID")
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        print(f"[prunegen.slurm] {self.label or 'job'}: SLURM job {job_id} (restart {restarts}) "
              f"on {os.uname().nodename}, cwd {self.cwd}\n[prunegen.slurm] command: {self.command}", flush=True)
        self._started = time.monotonic()
        self._signature = progress_signature(self.progress_dirs)
        command, env = self.command, None
        task = ranks.task()
        if task is not None:  # one rank of a data-parallel cell
            env = {**os.environ, **task.env}
            if task.rank != 0:
                command = f"{shlex.quote(sys.executable)} -m prunegen.cli rank"
            print(f"[prunegen.slurm] rank {task.rank} of {task.world}: {command}", flush=True)
            signal.signal(signal.SIGTERM, lambda signum, frame: self.stop())  # (submitit's own ignores it)
        self._proc = subprocess.Popen(["/bin/bash", "-c", command], cwd=self.cwd, start_new_session=True, env=env)
        rc = self._proc.wait()
        self._proc = None
        if rc != 0:
            raise SlurmError(f"{self.label or 'command'} failed ({exit_words(rc)}): {self.command}")
        print(f"[prunegen.slurm] {self.label or 'job'}: done", flush=True)
        return rc

    def stop(self) -> None:
        """Stop the running command (its whole process group): TERM, then KILL."""
        # Called from submitit's signal handler, i.e. while __call__ sits in proc.wait()
        # holding Popen's wait lock: so look at the child without reaping it.
        proc = self._proc
        if proc is None or _exited(proc.pid):
            return
        for sig, wait_s in ((signal.SIGTERM, self.stop_grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if _exited(proc.pid):
                    return
                time.sleep(0.05)

    def timed_out(self) -> bool:
        """Whether this run reached its time limit (submitit's own rule: 80% of the limit,
        or the limit less 10 minutes, whichever is sooner), rather than being preempted."""
        if not self.time_limit_min:
            return False
        limit_s = self.time_limit_min * 60.0
        return time.monotonic() - self._started >= min(0.8 * limit_s, limit_s - 600.0)

    def checkpoint(self, *args, **kwargs):
        """submitit's hook on time-out/preemption: stop the command, requeue the same job,
        unless this run timed out without any progress (it would time out again forever)."""
        timed_out = self.timed_out()
        self.stop()  # a cell stopped by TERM saves where it is: that counts as progress
        progressed = progress_signature(self.progress_dirs) != self._signature
        if timed_out and self.progress_dirs and not progressed:
            # SLURM signals up to a minute early (its time-limit checks run every 30 s), so one
            # run without progress may just have been signalled before the cell's first epoch
            # was done: only runs in a row without progress show the limit is too short.
            self.idle_timeouts = getattr(self, "idle_timeouts", 0) + 1
            if self.idle_timeouts >= getattr(self, "max_idle_timeouts", 2):
                print(f"[prunegen.slurm] {self.label or 'job'}: time limit reached with no progress in "
                      f"{', '.join(self.progress_dirs)} during {self.idle_timeouts} runs in a row: not "
                      "requeued (the time limit is shorter than one checkpoint interval)", flush=True)
                return None
            print(f"[prunegen.slurm] {self.label or 'job'}: time limit reached with no progress during "
                  "this run (signalled early?): requeued once more", flush=True)
            return submitit.helpers.DelayedSubmission(self, *args, **kwargs)
        if progressed:
            self.idle_timeouts = 0
        print(f"[prunegen.slurm] {self.label or 'job'}: {'time-out' if timed_out else 'time-out or preemption'}: "
              "stopping the command and requeueing (the cell saves at its next step and resumes from there)", flush=True)
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def progress_signature(dirs: Sequence[str]) -> tuple:
    """(folder, name, size, mtime) of every file directly in ``dirs``: changes when a job
    writes there (a cell writes its checkpoint.pt at the end of every epoch)."""
    sig = []
    for d in dirs:
        try:
            with os.scandir(d) as it:
                for e in it:
                    if e.is_file(follow_symlinks=False):
                        st = e.stat(follow_symlinks=False)
                        sig.append((d, e.name, st.st_size, st.st_mtime_ns))
        except OSError:
            continue
    return tuple(sorted(sig))


def _exited(pid: int) -> bool:
    """Whether our child ``pid`` has ended (without reaping it)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped
        return True
