"""Sending jobs to SLURM: several commands with one request as ONE submitit batch (one
`sbatch --array`), rejections that can pass retried with backoff (fewer jobs at a time
for a submit limit; waiting for a controller that is down), and one `scancel` for many."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import submitit

from .job import ShellJob
from .request import Request, signal_delay_for

log = logging.getLogger(__name__)


def make_executor(folder: str | os.PathLike, request: Request, *, python: str | None = None,
                  max_num_timeout: int = 3, signal_delay_s: int = 90,
                  array_parallelism: int | None = None):
    """A ``submitit.SlurmExecutor`` writing to ``folder`` with ``request``'s parameters.

    ``signal_delay_s``: SLURM sends USR2 that long before the time limit; submitit
    then calls :meth:`ShellJob.checkpoint` and requeues (at most ``max_num_timeout``
    times for time-outs; preemptions are always requeued). It is at most half the
    time limit (:func:`signal_delay_for`).
    """
    ex = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=max_num_timeout, python=python)
    params = request.submitit_parameters()
    params["signal_delay_s"] = signal_delay_for(request.runtime_min, signal_delay_s)
    if array_parallelism:
        params["array_parallelism"] = int(array_parallelism)
    ex.update_parameters(**params)
    return ex


@dataclasses.dataclass(frozen=True)
class Submitted:
    job_id: str         # "123" or, in an array, "123_4"
    stdout: Path
    stderr: Path
    result: Path        # submitit's result pickle (written when the job function returns or raises)


def submit(executor, jobs: Sequence[ShellJob]) -> list[Submitted]:
    """Submit ``jobs`` with one ``executor.batch()``: a single sbatch (an array when
    there are several). Returns one :class:`Submitted` per job, in order."""
    if not jobs:
        return []
    if len(jobs) == 1:
        sjobs = [executor.submit(jobs[0])]
    else:
        with executor.batch():
            sjobs = [executor.submit(j) for j in jobs]
    return [Submitted(str(sj.job_id), Path(sj.paths.stdout), Path(sj.paths.stderr), Path(sj.paths.result_pickle))
            for sj in sjobs]


# sbatch's words (stderr) for a rejection that passes: too many jobs queued for a limit
# (submit fewer at a time, and wait for some to finish), or a controller that is briefly
# unreachable (wait and retry). Anything else (invalid partition, bad option) is final.
TOO_MANY_JOBS = ("QOSMaxSubmitJobPerUserLimit", "AssocMaxSubmitJobLimit", "MaxSubmitJobs",
                 "job submit limit", "Too many jobs", "MaxJobCount", "Invalid job array specification",
                 "array size")


CONTROLLER_DOWN = ("Unable to contact slurm controller", "Socket timed out", "Connection refused",
                   "Zero Bytes were transmitted", "Slurm temporarily unable", "Resource temporarily unavailable",
                   "backup controller", "Communication connection failure", "Transport endpoint")


def rejection_kind(message: str) -> str:
    """"too-many", "controller" or "final": what an sbatch error ``message`` calls for."""
    low = message.lower()
    if any(w.lower() in low for w in TOO_MANY_JOBS):
        return "too-many"
    if any(w.lower() in low for w in CONTROLLER_DOWN):
        return "controller"
    return "final"


@dataclasses.dataclass
class SubmitOutcome:
    submitted: list[tuple[ShellJob, Submitted]]   # in submission order
    failed: list[tuple[ShellJob, str]]            # job, sbatch's last words
    sbatch_calls: int
    waited_s: float


def submit_with_backoff(executor, jobs: Sequence[ShellJob], *, budget_s: float = 600.0,
                        first_wait_s: float = 2.0, max_wait_s: float = 60.0,
                        sleep: Callable[[float], None] = time.sleep,
                        clock: Callable[[], float] = time.monotonic) -> SubmitOutcome:
    """:func:`submit` ``jobs``, retrying sbatch rejections that can pass.

    - too many jobs (a QOS/association submit limit, MaxJobCount, array too big): submit
      half as many at a time, down to one; when even one is refused, wait for queued jobs
      to finish;
    - controller unreachable: wait and retry the same chunk.

    Waits double from ``first_wait_s`` up to ``max_wait_s``; after ``budget_s`` seconds of
    waiting, or at once for any other rejection, the jobs not yet submitted fail with
    sbatch's message. A chunk that succeeds lets the next one grow back (doubling).
    """
    out = SubmitOutcome([], [], 0, 0.0)
    pending = list(jobs)
    chunk = max(1, len(pending))
    wait = first_wait_s
    while pending:
        part = pending[:chunk]
        out.sbatch_calls += 1
        try:
            subs = submit(executor, part)
        except Exception as e:  # submitit's FailedJobError carries sbatch's stderr
            msg = str(e).strip() or type(e).__name__
            kind = rejection_kind(msg)
            if kind == "final" or out.waited_s >= budget_s:
                why = msg if kind == "final" else f"{msg} (still refused after {out.waited_s:.0f} s of retries)"
                out.failed.extend((j, why) for j in pending)
                return out
            if kind == "too-many" and chunk > 1:
                chunk = max(1, chunk // 2)
                log.warning("sbatch refused %d job(s) (%s): submitting %d at a time", len(part), msg, chunk)
                continue  # fewer at once: no need to wait first
            step = min(wait, max_wait_s, max(0.0, budget_s - out.waited_s))
            log.warning("sbatch refused the job(s) (%s): waiting %.0f s before trying again", msg, step)
            sleep(step)
            out.waited_s += step
            wait = min(wait * 2, max_wait_s)
            continue
        out.submitted.extend(zip(part, subs))
        pending = pending[len(part):]
        wait = first_wait_s
        chunk = min(max(1, len(pending)), chunk * 2)
    return out


def cancel(job_ids: Iterable[str], runner: Callable[..., subprocess.CompletedProcess] | None = None) -> bool:
    """Cancel all ``job_ids`` with one ``scancel``; False (and a log line) if it failed."""
    ids = list(dict.fromkeys(str(j) for j in job_ids))
    if not ids:
        return True
    run = runner or (lambda a: subprocess.run(a, stdin=subprocess.DEVNULL, capture_output=True,
                                              text=True, timeout=60))
    try:
        p = run(["scancel", *ids])
    except (OSError, subprocess.SubprocessError) as e:
        log.error("scancel %s failed: %s", " ".join(ids), e)
        return False
    if p.returncode != 0:
        log.error("scancel %s failed: %s", " ".join(ids), (p.stderr or p.stdout).strip())
        return False
    return True
