"""SLURM through submitit: what a job asks for, a requeueable shell job, and one
shared status watcher.

No Snakemake import: the executor plugin (``snakemake_executor_plugin_prunegen``)
turns Snakemake jobs into shell commands and resource requests, and this module
turns those into SLURM jobs and reads their state back.

- :class:`Request` maps resources (GPUs, CPUs, memory in MB, minutes, partition,
  account, constraint, QOS, extra sbatch flags) to ``submitit.SlurmExecutor``
  parameters; :func:`make_executor` builds the executor for a folder.
- :class:`ShellJob` runs one shell command (a Snakemake job command) in a
  subprocess. It is ``Checkpointable``: on time-out or preemption submitit calls
  its ``checkpoint`` hook, which stops the command and requeues the same command.
  The training engine resumes from its per-epoch ``checkpoint.pt`` by itself, so a
  requeue only has to run the command again.
- :func:`submit` sends several commands with one request as ONE submitit batch,
  i.e. one ``sbatch --array``.
- :class:`StatusWatcher` reads the state of all active jobs with ONE ``sacct``
  call per poll (plus ONE ``squeue`` call for the live reason of those pending); where ``sacct`` fails (accounting disabled), ONE ``squeue`` call,
  plus ``scontrol show job`` only for jobs squeue no longer lists and, when SLURM
  forgot them too, submitit's result pickles. It never waits on a job's result.
- :func:`cancel` cancels all given jobs with one ``scancel``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import submitit
import submitit.helpers

log = logging.getLogger(__name__)

# SLURM job states (squeue/scontrol/sacct spelling), by what they mean for us.
ACTIVE_STATES = frozenset({
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED",
    "CONFIGURING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESV_DEL_HOLD", "POWER_UP_NODE",
    "STOPPED", "SPECIAL_EXIT",
})
SUCCESS_STATES = frozenset({"COMPLETED"})
# States SLURM shows for a job it is about to requeue (preemption with PreemptMode=REQUEUE,
# a node failure or a node set DOWN): the job is still active, for up to the watcher's
# requeue grace; only a job that stays in one of them past it has failed.
REQUEUE_STATES = frozenset({"PREEMPTED", "NODE_FAIL"})
# everything else (FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, BOOT_FAIL, DEADLINE,
# REVOKED) is a failure

# Pending reasons that cannot clear without someone changing the cluster or the job: a job
# pending for one of them would wait forever. Reasons not listed (Priority, Resources,
# QOSMaxJobsPerUser, ReqNodeNotAvail, PartitionDown, BeginTime, Dependency, ...) just wait.
UNSCHEDULABLE_REASONS = frozenset({
    "PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit",
    "QOSMaxWallDurationPerJobLimit", "AssocMaxWallDurationPerJobLimit",
    "QOSMaxCpuPerJobLimit", "AssocMaxCpuPerJobLimit", "QOSMaxNodePerJobLimit",
    "AssocMaxNodesPerJobLimit", "QOSMaxMemoryPerJob", "AssocMaxMemoryPerJob",
    "QOSMaxGRESPerJob", "AssocMaxGRESPerJob", "QOSMinCpuNotSatisfied", "QOSMinGRES",
    "InvalidAccount", "InvalidQOS", "QOSNotAllowed", "AccountNotAllowed",
    "BadConstraints", "DependencyNeverSatisfied", "PartitionNotAvail",
})

ACCOUNTING_DISABLED = "accounting storage is disabled"


class SlurmError(RuntimeError):
    pass


# --------------------------------------------------------------------------- requests

def parse_sbatch_flags(flags: str | None) -> dict[str, object]:
    """``"--qos=high --exclusive -C a100"`` -> ``{"qos": "high", "exclusive": True,
    "constraint": "a100"}`` (submitit's ``additional_parameters``: one ``#SBATCH`` line each)."""
    short = {"-p": "partition", "-A": "account", "-C": "constraint", "-q": "qos", "-t": "time",
             "-c": "cpus-per-task", "-G": "gpus", "-w": "nodelist", "-x": "exclude",
             "-J": "job-name", "-N": "nodes", "-n": "ntasks", "-L": "licenses", "-d": "dependency"}
    out: dict[str, object] = {}
    words = shlex.split(flags or "")
    i = 0
    while i < len(words):
        w = words[i]
        if w.startswith("--"):
            key, eq, value = w[2:].partition("=")
            if eq:
                out[key] = value
            elif i + 1 < len(words) and not words[i + 1].startswith("-"):
                out[key] = words[i + 1]
                i += 1
            else:
                out[key] = True
        elif w.startswith("-") and len(w) >= 2:
            key = short.get(w[:2])
            if key is None:
                raise SlurmError(f"unknown short sbatch flag {w!r} in {flags!r}: use the --long form")
            if len(w) > 2:
                out[key] = w[2:].lstrip("=")
            elif i + 1 < len(words):
                out[key] = words[i + 1]
                i += 1
            else:
                raise SlurmError(f"sbatch flag {w!r} needs a value in {flags!r}")
        else:
            raise SlurmError(f"cannot parse {w!r} in sbatch flags {flags!r}")
        i += 1
    return out


@dataclasses.dataclass(frozen=True)
class Request:
    """What one SLURM job asks for. Hashable: jobs with equal requests share one array."""

    cpus: int = 1
    mem_mb: int | None = None
    runtime_min: int | None = None
    gpus: int = 0
    gpu_model: str | None = None
    partition: str | None = None
    account: str | None = None
    constraint: str | None = None
    qos: str | None = None
    extra: str | None = None  # further sbatch flags, e.g. "--exclusive --mail-type=END"
    job_name: str = "prunegen"
    comment: str | None = None  # e.g. the rule and cell wildcards: shown by squeue %k, sacct Comment

    def submitit_parameters(self) -> dict:
        """Parameters for ``submitit.SlurmExecutor.update_parameters``."""
        p: dict = {"job_name": self.job_name, "nodes": 1, "ntasks_per_node": 1,
                   "cpus_per_task": max(1, int(self.cpus)), "wckey": None}
        if self.mem_mb is not None:
            p["mem"] = f"{int(self.mem_mb)}M"
        if self.runtime_min is not None:
            p["time"] = max(1, int(self.runtime_min))
        if self.gpus:
            p["gpus_per_node"] = f"{self.gpu_model}:{int(self.gpus)}" if self.gpu_model else int(self.gpus)
        for key in ("partition", "account", "constraint", "qos"):
            if getattr(self, key):
                p[key] = getattr(self, key)
        extra = parse_sbatch_flags(self.extra)
        if self.comment and "comment" not in extra:  # a --comment in the extra flags wins
            p["comment"] = _sbatch_safe(self.comment)
        if extra:
            p["additional_parameters"] = extra
        return p


def _sbatch_safe(text: str, limit: int = 1000) -> str:
    """``text`` as one ``#SBATCH --comment=`` value: no blanks, quotes or newlines (sbatch
    splits an #SBATCH line at blanks), bounded length."""
    text = re.sub(r"[\s\"'\\]+", "_", text.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def signal_delay_for(runtime_min: int | None, signal_delay_s: int) -> int:
    """How long before the time limit SLURM signals (USR2) a job of ``runtime_min`` minutes:
    ``signal_delay_s``, but at most a quarter of the limit. A delay as long as the limit (120 s
    on a 2-minute job) has SLURM signal the job as soon as it starts: it would be stopped and
    requeued before it did anything. (SLURM checks time limits every 30 s and signals up to
    that much early: on a 1-minute limit USR2 comes 15 to 45 s into the run.)"""
    delay = int(signal_delay_s)
    if runtime_min:
        delay = min(delay, max(1, int(runtime_min) * 15))
    return max(0, delay)


# --------------------------------------------------------------------------- the job

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
        self._proc = subprocess.Popen(["/bin/bash", "-c", self.command], cwd=self.cwd, start_new_session=True)
        rc = self._proc.wait()
        self._proc = None
        if rc != 0:
            how = f"signal {signal.Signals(-rc).name}" if rc < 0 and -rc in signal.Signals._value2member_map_ else f"exit {rc}"
            raise SlurmError(f"{self.label or 'command'} failed ({how}): {self.command}")
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
        progressed = progress_signature(self.progress_dirs) != self._signature
        self.stop()
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
              "stopping the command and requeueing (the cell resumes from its last epoch checkpoint)", flush=True)
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


@dataclasses.dataclass(frozen=True)
class Submitted:
    job_id: str         # "123" or, in an array, "123_4"
    stdout: Path
    stderr: Path
    result: Path        # submitit's result pickle (written when the job function returns or raises)


def job_files(folder: str | os.PathLike, job_id: str) -> Submitted:
    """submitit's file names for ``job_id`` in a flat ``folder``."""
    folder = Path(folder)
    return Submitted(job_id, folder / f"{job_id}_0_log.out", folder / f"{job_id}_0_log.err",
                     folder / f"{job_id}_0_result.pkl")


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


# --------------------------------------------------------------------------- partitions

def parse_slurm_minutes(text: str) -> int | None:
    """SLURM's time limit spelling -> minutes; None for UNLIMITED/INFINITE/unset.
    ``"30"``, ``"1:30:00"``, ``"2-00:00:00"``, ``"1-12"``, ``"45:00"``."""
    t = text.strip()
    if not t or t.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A"):
        return None
    days = 0
    if "-" in t:
        d, _, t = t.partition("-")
        days = int(d)
        parts = [int(x) for x in t.split(":")]  # days-hours[:minutes[:seconds]]
        parts += [0] * (3 - len(parts))
        h, m, sec = parts
    else:
        parts = [int(x) for x in t.split(":")]
        if len(parts) == 1:
            h, m, sec = 0, parts[0], 0
        elif len(parts) == 2:
            h, m, sec = 0, parts[0], parts[1]
        else:
            h, m, sec = parts
    return days * 1440 + h * 60 + m + (1 if sec else 0)


def partition_max_minutes(partition: str | None,
                          runner: Callable[..., subprocess.CompletedProcess] | None = None) -> int | None:
    """The partition's MaxTime in minutes (``scontrol show partition``; the Default=YES
    one when ``partition`` is None); None when unlimited or when scontrol cannot say."""
    run = runner or (lambda a: subprocess.run(a, stdin=subprocess.DEVNULL, capture_output=True,
                                              text=True, timeout=60))
    args = ["scontrol", "show", "partition", "-o"] + ([partition] if partition else [])
    try:
        p = run(args)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("%s failed: %s: time limits are not checked against the partition", " ".join(args), e)
        return None
    if p.returncode != 0:
        log.warning("%s failed: %s: time limits are not checked against the partition",
                    " ".join(args), (p.stderr or p.stdout).strip())
        return None
    for line in p.stdout.splitlines():
        f = _parse_scontrol_line(line)
        if not f or (partition is None and f.get("Default") != "YES"):
            continue
        try:
            return parse_slurm_minutes(f.get("MaxTime", ""))
        except ValueError:
            log.warning("cannot read MaxTime=%r of partition %s", f.get("MaxTime"), f.get("PartitionName"))
            return None
    return None


# --------------------------------------------------------------------------- status

@dataclasses.dataclass(frozen=True)
class Status:
    state: str      # SLURM's state (or RESULT_OK / RESULT_ERROR / UNKNOWN when SLURM forgot the job)
    outcome: str    # "active", "success" or "failed"
    source: str     # "sacct", "squeue", "scontrol", "result-pickle", "none"
    reason: str = ""
    cancel: bool = False  # failed but still queued (an unschedulable request): scancel it
    reason_source: str = ""  # where a pending reason came from, when not ``source`` (squeue)

    @property
    def done(self) -> bool:
        return self.outcome != "active"


def _outcome(state: str) -> str:
    if state in SUCCESS_STATES:
        return "success"
    if state in ACTIVE_STATES or state in REQUEUE_STATES:  # the latter judged by StatusWatcher._judge
        return "active"
    return "failed"


def _base_state(state: str) -> str:
    # sacct: "CANCELLED by 0"; scontrol: "CANCELLED"; squeue may print "PENDING"
    return state.split()[0].rstrip("+").upper() if state.strip() else "UNKNOWN"


def _bases(ids: Iterable[str]) -> str:
    """"12_0,12_1,15" -> "12,15": the ids to ask SLURM about (one per array)."""
    return ",".join(dict.fromkeys(j.split("_")[0] for j in ids))


def _expand_array(job_id: str) -> list[str]:
    """``123_[5-7,9%4]`` -> ["123_5", "123_6", "123_7", "123_9"]; other ids unchanged."""
    m = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not m:
        return [job_id]
    base, spec = m.group(1), m.group(2).split("%")[0]
    ids = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        ids.extend(f"{base}_{i}" for i in range(int(a), int(b or a) + 1))
    return ids


def read_result_pickle(path: Path) -> tuple[str, str] | None:
    """submitit's ("success", value) / ("error", traceback) from a result pickle, or None."""
    if not path.exists():
        return None
    try:
        import pickle

        with open(path, "rb") as f:
            tag, value = pickle.load(f)
        return str(tag), str(value)
    except Exception as e:  # half-written or unreadable: not a result yet
        log.debug("cannot read %s: %s", path, e)
        return None


class StatusWatcher:
    """The state of many SLURM jobs, with one query per poll.

    ``mode``: "auto" (sacct; where it fails, squeue/scontrol), "sacct" or "squeue".
    In "auto" a failed sacct call is retried ``sacct_attempts`` times within the poll
    (1 s, then 2 s apart; not when accounting is disabled, which no retry cures); only
    then does that poll read squeue, and sacct is tried again ``sacct_retry_after_s``
    later. ``queries`` counts the SLURM commands run, by name (tests and the plugin's
    debug log read it).

    Two judgements on top of SLURM's states:

    - PREEMPTED / NODE_FAIL: SLURM shows these before it requeues the job (a requeued
      job reads PENDING again, with a new record). Such a job stays active; only one
      still in that state ``requeue_grace_s`` after it was first seen has failed.
    - PENDING for a reason in :data:`UNSCHEDULABLE_REASONS`, seen on polls spanning at
      least ``unschedulable_confirm_s``: failed with ``cancel=True`` (it would wait
      forever; the caller cancels it). The confirmation guards against a reason that
      shows for one scheduling pass only.
    """

    def __init__(self, mode: str = "auto", timeout_s: float = 60.0,
                 runner: Callable[..., subprocess.CompletedProcess] | None = None,
                 missing_grace_s: float = 120.0, requeue_grace_s: float = 600.0,
                 unschedulable_confirm_s: float = 15.0, sacct_attempts: int = 3,
                 sacct_retry_after_s: float = 300.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if mode not in ("auto", "sacct", "squeue"):
            raise ValueError(f"status mode must be auto, sacct or squeue, not {mode!r}")
        self.mode = mode
        self.timeout_s = timeout_s
        self.missing_grace_s = missing_grace_s
        self.requeue_grace_s = requeue_grace_s
        self.unschedulable_confirm_s = unschedulable_confirm_s
        self.sacct_attempts = max(1, int(sacct_attempts))
        self.sacct_retry_after_s = sacct_retry_after_s
        self._sleep = sleep
        self._clock = clock
        self._run = runner or self._default_run
        self.queries: dict[str, int] = {}
        self.polls = 0
        self._results: dict[str, Path] = {}      # job id -> submitit result pickle
        self._first_missing: dict[str, float] = {}
        self._first_requeue: dict[str, float] = {}   # job id -> first seen PREEMPTED/NODE_FAIL
        self._first_stuck: dict[str, float] = {}     # job id -> first seen pending, unschedulable
        self._sacct_again_at = 0.0 if mode != "squeue" else float("inf")
        self.warnings: list[str] = []

    @property
    def use_sacct(self) -> bool:
        """Whether the next poll asks sacct first."""
        return self.mode != "squeue" and self._clock() >= self._sacct_again_at

    # -- bookkeeping
    def register(self, job_id: str, result_pickle: str | os.PathLike | None = None) -> None:
        if result_pickle is not None:
            self._results[str(job_id)] = Path(result_pickle)

    def forget(self, job_id: str) -> None:
        self._results.pop(job_id, None)
        for d in (self._first_missing, self._first_requeue, self._first_stuck):
            d.pop(job_id, None)
        self._first_missing.pop("result:" + job_id, None)

    def _default_run(self, args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=self.timeout_s)

    def _query(self, args: list[str]) -> subprocess.CompletedProcess | None:
        self.queries[args[0]] = self.queries.get(args[0], 0) + 1
        try:
            return self._run(args)
        except FileNotFoundError:
            return subprocess.CompletedProcess(args, 127, "", f"{args[0]}: command not found")
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", f"{args[0]} timed out after {self.timeout_s}s")

    def _warn(self, msg: str) -> None:
        if msg not in self.warnings:
            self.warnings.append(msg)
            log.warning(msg)

    # -- the poll
    def poll(self, job_ids: Iterable[str]) -> dict[str, Status]:
        """The status of each of ``job_ids`` (``123`` or ``123_4``) from one query."""
        ids = list(dict.fromkeys(str(j) for j in job_ids))
        if not ids:
            return {}
        self.polls += 1
        if self.use_sacct:
            got = self._poll_sacct_retrying(ids)
            if got is not None:
                return self._judge(got)
            if self.mode == "sacct":
                return {j: Status("UNKNOWN", "active", "none", "sacct failed") for j in ids}
            self._sacct_again_at = self._clock() + self.sacct_retry_after_s
        return self._judge(self._poll_squeue(ids))

    def _poll_sacct_retrying(self, ids: list[str]) -> dict[str, Status] | None:
        for attempt in range(self.sacct_attempts):
            if attempt:
                self._sleep(float(attempt))  # 1 s, 2 s, ...: a busy slurmdbd usually answers
            got, err = self._poll_sacct(ids)
            if got is not None:
                if self._sacct_again_at:  # it had failed before: say that it works again
                    log.warning("sacct answers again: reading job states from sacct")
                    self._sacct_again_at = 0.0
                return got
            if ACCOUNTING_DISABLED in err.lower():
                break  # no retry makes accounting appear
        self._warn(f"sacct failed ({err}); reading job states from squeue/scontrol for "
                   f"{self.sacct_retry_after_s:.0f} s, then trying sacct again"
                   + (" (SLURM accounting is disabled)" if ACCOUNTING_DISABLED in err.lower() else ""))
        return None

    def _judge(self, statuses: dict[str, Status]) -> dict[str, Status]:
        """Requeue states stay active for a grace; unschedulable pending jobs fail."""
        now = self._clock()
        out = {}
        for j, st in statuses.items():
            if st.state in REQUEUE_STATES:
                first = self._first_requeue.setdefault(j, now)
                if now - first < self.requeue_grace_s:
                    st = dataclasses.replace(st, outcome="active", reason=(
                        st.reason + "; " if st.reason else "") + "SLURM requeues it")
                else:
                    st = dataclasses.replace(st, outcome="failed", reason=(
                        f"still {st.state} {now - first:.0f} s after it was first seen: "
                        "SLURM did not requeue it"))
            else:
                self._first_requeue.pop(j, None)
            reason = st.reason.split(",")[0].strip()
            if st.state == "PENDING" and reason in UNSCHEDULABLE_REASONS:
                first = self._first_stuck.setdefault(j, now)
                if now - first >= self.unschedulable_confirm_s:
                    st = dataclasses.replace(st, outcome="failed", cancel=True, reason=(
                        f"pending with reason {reason}, which cannot clear: the request can "
                        "never start on this cluster"))
            else:
                self._first_stuck.pop(j, None)
            out[j] = st
        return out

    def _poll_sacct(self, ids: list[str]) -> tuple[dict[str, Status] | None, str]:
        # by array id: sacct (like squeue) lists a still-pending array task only under its array
        p = self._query(["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode,Reason", "-j", _bases(ids)])
        if p.returncode != 0:
            return None, ((p.stderr or p.stdout).strip() or f"exit {p.returncode}")
        rows: dict[str, tuple[str, str]] = {}
        for line in p.stdout.splitlines():
            parts = line.split("|")
            if len(parts) < 2 or not parts[0]:
                continue
            state = _base_state(parts[1])
            if state == "PENDING":  # why it waits (Priority, Resources, PartitionConfig, ...)
                detail = parts[3] if len(parts) > 3 and parts[3] not in ("", "None") else ""
            else:
                detail = f"exit code {parts[2]}" if len(parts) > 2 and parts[2] not in ("", "0:0") else ""
            for jid in _expand_array(parts[0]):
                rows[jid] = (state, detail)
        # sacct's Reason of a pending job is slurmdbd's copy (state_reason_prev_db), written
        # when the record is: it can read "None" for the whole wait while the controller says
        # PartitionConfig, or name a reason that has since cleared. The live reason is the
        # controller's: one squeue call per poll, for the jobs sacct says are pending.
        pending = [j for j in ids if j in rows and rows[j][0] == "PENDING"]
        live = self._live_reasons(pending) if pending else None
        out: dict[str, Status] = {}
        now = self._clock()
        overdue = []
        for j in ids:
            if j in rows:
                self._first_missing.pop(j, None)
                state, detail = rows[j]
                if state == "PENDING" and live is not None:
                    # not listed as pending (it just started, or ended): no reason to judge
                    out[j] = Status(state, _outcome(state), "sacct", live.get(j, ""), reason_source="squeue")
                    continue
                out[j] = Status(state, _outcome(state), "sacct", detail)
            else:
                # accounting lags the controller a little: a new job has no row for a while
                first = self._first_missing.setdefault(j, now)
                if now - first < self.missing_grace_s:
                    out[j] = Status("UNKNOWN", "active", "sacct", "no sacct row yet")
                else:
                    overdue.append(j)
        if overdue:  # rare: ask the controller about these
            out.update(self._poll_squeue(overdue))
        return out, ""

    def _live_reasons(self, ids: list[str]) -> dict[str, str] | None:
        """The controller's reason for each of ``ids`` that it lists as pending (one squeue
        call); None when squeue fails (then sacct's reason is all there is)."""
        p = self._query(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", _bases(ids)])
        if p.returncode != 0 and "invalid job id" not in (p.stderr or "").lower():
            self._warn(f"squeue failed: {(p.stderr or p.stdout).strip()}: pending reasons from sacct, "
                       "which may be stale")
            return None
        want = set(ids)
        reasons: dict[str, str] = {}
        for line in (p.stdout if p.returncode == 0 else "").splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 3 and parts[0] and _base_state(parts[1]) == "PENDING":
                for jid in _expand_array(parts[0]):
                    if jid in want:
                        reasons[jid] = "" if parts[2] in ("None", "") else parts[2]
        return reasons

    def _poll_squeue(self, ids: list[str]) -> dict[str, Status]:
        p = self._query(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", _bases(ids)])
        listed: dict[str, tuple[str, str]] = {}
        if p.returncode != 0 and "invalid job id" not in (p.stderr or "").lower():
            self._warn(f"squeue failed: {(p.stderr or p.stdout).strip()}")
            return {j: Status("UNKNOWN", "active", "none", "squeue failed") for j in ids}
        for line in (p.stdout if p.returncode == 0 else "").splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 2 and parts[0]:
                for jid in _expand_array(parts[0]):
                    listed[jid] = (_base_state(parts[1]), parts[2] if len(parts) > 2 else "")
        out: dict[str, Status] = {}
        gone = []
        for j in ids:
            if j in listed:
                state, reason = listed[j]
                out[j] = Status(state, _outcome(state), "squeue", "" if reason in ("None", "") else reason)
            else:
                gone.append(j)
        if gone:
            out.update(self._poll_scontrol(gone))
        return out

    def _poll_scontrol(self, ids: list[str]) -> dict[str, Status]:
        """Jobs squeue no longer lists: one ``scontrol show job`` per array (or job)."""
        by_base: dict[str, list[str]] = {}
        for j in ids:
            by_base.setdefault(j.split("_")[0], []).append(j)
        out: dict[str, Status] = {}
        for base, members in by_base.items():
            p = self._query(["scontrol", "show", "job", "-o", base])
            records: dict[str, tuple[str, str]] = {}
            if p.returncode == 0:
                for line in p.stdout.splitlines():
                    f = _parse_scontrol_line(line)
                    if not f:
                        continue
                    if f.get("ArrayJobId") and f.get("ArrayTaskId"):
                        for jid in _expand_array(f"{f['ArrayJobId']}_[{f['ArrayTaskId']}]"):
                            records[jid] = (_base_state(f.get("JobState", "")), f.get("Reason", ""))
                    elif f.get("JobId"):
                        records[f["JobId"]] = (_base_state(f.get("JobState", "")), f.get("Reason", ""))
            for j in members:
                if j in records:
                    state, reason = records[j]
                    out[j] = Status(state, _outcome(state), "scontrol", "" if reason == "None" else reason)
                else:
                    out[j] = self._from_result(j, "SLURM no longer knows the job")
        return out

    def _from_result(self, job_id: str, why: str) -> Status:
        path = self._results.get(job_id)
        res = read_result_pickle(path) if path else None
        if res is None:
            # squeue does not list it, scontrol/sacct do not know it, no result yet: give a
            # just-finished job's result pickle a moment to appear on a shared file system
            key = "result:" + job_id
            first = self._first_missing.setdefault(key, self._clock())
            if self._clock() - first < min(self.missing_grace_s, 30.0):
                return Status("UNKNOWN", "active", "none", why)
            return Status("UNKNOWN", "failed", "none", f"{why} and it left no submitit result")
        tag, value = res
        if tag == "success":
            return Status("RESULT_OK", "success", "result-pickle", why)
        return Status("RESULT_ERROR", "failed", "result-pickle", value.strip().splitlines()[-1] if value.strip() else why)


_FIELD = re.compile(r"(?:^|\s)([A-Za-z][\w:/.]*)=")


def _parse_scontrol_line(line: str) -> dict[str, str]:
    line = line.strip()
    matches = list(_FIELD.finditer(line))
    fields: dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        fields[m.group(1)] = line[m.end():end].strip()
    return fields


class PollSchedule:
    """How long to wait before the next status poll: ``base_s`` after anything changed
    (a job started, ended, or was submitted), then ``factor`` times longer after every
    poll that changed nothing, up to ``ceiling_s``."""

    def __init__(self, base_s: float = 10.0, ceiling_s: float = 60.0, factor: float = 1.5) -> None:
        self.base_s = float(base_s)
        self.ceiling_s = max(float(ceiling_s), self.base_s)
        self.factor = float(factor)
        self.interval_s = self.base_s

    def changed(self) -> float:
        self.interval_s = self.base_s
        return self.interval_s

    def unchanged(self) -> float:
        self.interval_s = min(self.ceiling_s, self.interval_s * self.factor)
        return self.interval_s


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


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - a debugging aid
    """``python -m prunegen.slurm ID...``: the watcher's view of some jobs."""
    logging.basicConfig(level=logging.INFO)
    w = StatusWatcher()
    for j, s in w.poll(argv if argv is not None else sys.argv[1:]).items():
        print(j, s.state, s.outcome, s.source, s.reason, sep="\t")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
