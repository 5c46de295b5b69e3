"""One shared status watcher for every active SLURM job of a run, and the poll schedule.

`StatusWatcher` reads the state of all active jobs with ONE `sacct` call per poll (plus
ONE `squeue` call for the live reason of those pending); where `sacct` fails (accounting
disabled), ONE `squeue` call, plus `scontrol show job` only for jobs squeue no longer lists
and, when SLURM forgot them too, submitit's result pickles. It never waits on a job's
result. A job SLURM is about to requeue (preempted, node failure) stays active for a
grace period; one pending for a reason that cannot clear is marked for cancelling.

The SLURM side has no Snakemake import: the executor plugin
(`snakemake_executor_plugin_prunegen`) turns Snakemake jobs into shell commands and
requests (`request`), sends them (`submit`, as `job.ShellJob`s) and asks this watcher.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .request import parse_scontrol_line

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


# --------------------------------------------------------------------------- status

@dataclasses.dataclass(frozen=True)
class Status:
    state: str      # SLURM's state (or RESULT_OK / RESULT_ERROR / UNKNOWN when SLURM forgot the job)
    outcome: str    # "active", "success" or "failed"
    source: str     # "sacct", "squeue", "scontrol", "result-pickle", "none"
    reason: str = ""
    cancel: bool = False  # failed but still queued (an unschedulable request): scancel it
    reason_source: str = ""  # where a pending reason came from, when not ``source`` (squeue)
    nodes: str = ""  # where it ran (SLURM's NodeList: "node[1-2]"), "" before it started or unknown

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


def _node_list(text: str) -> str:
    """SLURM's NodeList, "" where it names no node (a pending job: "None assigned", "(null)")."""
    text = text.strip()
    return "" if not text or text.startswith("None") or text == "(null)" else text


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

    def tracked(self) -> list[str]:
        """The jobs registered and not forgotten: those not yet seen to end."""
        return list(self._results)

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
        p = self._query(["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode,Reason,NodeList", "-j", _bases(ids)])
        if p.returncode != 0:
            return None, ((p.stderr or p.stdout).strip() or f"exit {p.returncode}")
        rows: dict[str, tuple[str, str]] = {}
        nodes: dict[str, str] = {}
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
                nodes[jid] = _node_list(parts[4] if len(parts) > 4 else "")
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
                out[j] = Status(state, _outcome(state), "sacct", detail, nodes=nodes.get(j, ""))
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
        p = self._query(["squeue", "-h", "-r", "-o", "%i|%T|%r|%N", "-j", _bases(ids)])
        listed: dict[str, tuple[str, str, str]] = {}
        if p.returncode != 0 and "invalid job id" not in (p.stderr or "").lower():
            self._warn(f"squeue failed: {(p.stderr or p.stdout).strip()}")
            return {j: Status("UNKNOWN", "active", "none", "squeue failed") for j in ids}
        for line in (p.stdout if p.returncode == 0 else "").splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 2 and parts[0]:
                for jid in _expand_array(parts[0]):
                    listed[jid] = (_base_state(parts[1]), parts[2] if len(parts) > 2 else "",
                                   _node_list(parts[3] if len(parts) > 3 else ""))
        out: dict[str, Status] = {}
        gone = []
        for j in ids:
            if j in listed:
                state, reason, where = listed[j]
                out[j] = Status(state, _outcome(state), "squeue", "" if reason in ("None", "") else reason,
                                nodes=where)
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
            records: dict[str, tuple[str, str, str]] = {}
            if p.returncode == 0:
                for line in p.stdout.splitlines():
                    f = parse_scontrol_line(line)
                    if not f:
                        continue
                    if f.get("ArrayJobId") and f.get("ArrayTaskId"):
                        for jid in _expand_array(f"{f['ArrayJobId']}_[{f['ArrayTaskId']}]"):
                            records[jid] = (_base_state(f.get("JobState", "")), f.get("Reason", ""),
                                            _node_list(f.get("NodeList", "")))
                    elif f.get("JobId"):
                        records[f["JobId"]] = (_base_state(f.get("JobState", "")), f.get("Reason", ""),
                                               _node_list(f.get("NodeList", "")))
            for j in members:
                if j in records:
                    state, reason, where = records[j]
                    out[j] = Status(state, _outcome(state), "scontrol", "" if reason == "None" else reason,
                                    nodes=where)
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


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - a debugging aid
    """``python -m prunegen.cluster.slurm.status ID...``: the watcher's view of some jobs."""
    logging.basicConfig(level=logging.INFO)
    w = StatusWatcher()
    for j, s in w.poll(argv if argv is not None else sys.argv[1:]).items():
        print(j, s.state, s.outcome, s.source, s.reason, sep="\t")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
