"""Why a SLURM job failed, and what its retry should change (issue 30).

A retry that repeats the request repeats the failure: a cell killed for memory is killed
again at the same ``--mem``, a job sent back to a broken node fails there again in seconds,
and a cell whose own code or data is at fault fails the same way whatever it is given. So
the executor reads the cause of each failure, from SLURM's state and the job's logs, and
acts on it:

=========  =====================================================  ==========================
cause      read from                                              the retry
=========  =====================================================  ==========================
memory     state OUT_OF_MEMORY, or slurmstepd's "exceeded memory   ``oom_factor`` x the memory,
           limit" / cgroup's "oom-kill" in the job's log            up to a ceiling, else none
node       NODE_FAIL or BOOT_FAIL; a job that failed before its    another node: the node is
           command started (the node's software or file system);   excluded once it has failed
           a CUDA/NCCL error (the node's GPU)                      that often in the window
cell       the cell's own error (a Python traceback or prunegen's  none: the error is named once
           one-line error, exit 1 or 2)
other      anything else (e.g. TIMEOUT without progress; rank 0    Snakemake's retries, as is
           of a data-parallel cell lost another rank and no
           task's log says why)
=========  =====================================================  ==========================

A data-parallel cell's job has a log per task (`task_logs`): every one is read, since the
rank that met the cause (killed for memory, a CUDA error) is not rank 0, whose traceback the
cell's log holds; that one only says it lost a peer, which is not the cell's own error.
"""

from __future__ import annotations

import glob
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# What SLURM writes into a job's stderr when it kills a step for memory: jobacct_gather's
# OverMemoryKill (the job then ends FAILED) and the cgroup plugin (OUT_OF_MEMORY).
MEMORY_WORDS = ("exceeded memory limit", "exceeded job memory limit", "oom-kill event", "oom_kill event",
                "out-of-memory handler")
# The node's GPU or interconnect, not the cell: worth another node.
DEVICE_WORDS = ("CUDA error", "CUDA-capable device", "NCCL error", "cudaErrorDevicesUnavailable",
                "no CUDA GPUs are available")
# What a cell's own failure leaves at the end of its log (engine errors exit 2 with one line).
CELL_WORDS = ("Traceback (most recent call last)", "prunegen: error:", "prunegen run-cell: error")
# Rank 0 of a data-parallel cell whose peer died (gloo, NCCL, torch.distributed): the cause
# is the peer's, not the cell's code.
LOST_RANK_WORDS = ("Connection reset by peer", "Connection closed by peer", "remote process exited",
                   "DistNetworkError", "DistBackendError")
# ShellJob prints this as its command starts: a failed job without it never ran its command.
STARTED_WORD = "[prunegen.slurm]"
NODE_STATES = ("NODE_FAIL", "BOOT_FAIL")

_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def tail(path: str | Path | None, limit: int = 65536) -> str:
    """The last `limit` bytes of a log ("" where it is missing): what a cause is read from."""
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def classify(state: str, logs: Sequence[str | Path | None] = (), cell_log: str | Path | None = None,
             started_log: str | Path | None = None) -> str:
    """The cause of a failed job: "memory", "node", "cell" or "other".

    `logs`: the job's own stdout/stderr (submitit's); `cell_log`: the cell's log (the rule's);
    `started_log`: the log ShellJob writes its start line into (its stdout), where a job
    that never started its command shows it."""
    text = "\n".join(tail(p) for p in logs)
    cell = tail(cell_log)
    if state == "OUT_OF_MEMORY" or any(w in text for w in MEMORY_WORDS):
        return "memory"
    if state in NODE_STATES or any(w in text or w in cell for w in DEVICE_WORDS):
        return "node"
    if state == "FAILED" and started_log is not None and STARTED_WORD not in tail(started_log):
        return "node"  # it failed before its command ran: nothing of the cell's was reached
    if any(w in cell for w in LOST_RANK_WORDS):
        return "other"  # rank 0 lost a peer, and no task's log says why: retried as is
    if any(w in cell for w in CELL_WORDS):
        return "cell"
    return "other"


def task_logs(stdout: str | Path | None, stderr: str | Path | None) -> list[str]:
    """The logs of every task of a submitit job, given task 0's (`<job>_0_log.out` and
    `.err`): one pair per task of a multi-task job (a data-parallel cell), else the two."""
    out = []
    for path in (Path(p) for p in (stdout, stderr) if p):
        m = re.fullmatch(r"(.+)_0_log\.(out|err)", path.name)
        tasks = [] if m is None else [t for t in path.parent.glob(f"{glob.escape(m[1])}_*_log.{m[2]}")
                                      if re.fullmatch(rf"{re.escape(m[1])}_\d+_log\.{m[2]}", t.name)]
        out += sorted(map(str, tasks)) or [str(path)]
    return out


def valid_node(name: str) -> bool:
    """A real node name: not "", "None", "(null)" or a host list (the plugin's 2.8.0 wrote
    `--exclude=None`, snakemake-executor-plugin-slurm #485)."""
    return bool(_NODE_NAME.match(name or "")) and name not in ("None", "none", "null")


def expand_nodes(node_list: str) -> list[str]:
    """SLURM's compressed NodeList ("gpu[01-03,07],cpu5") as names, validated."""
    out: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", node_list or ""):
        m = re.fullmatch(r"(.*)\[(.*)\]", part)
        if not m:
            out.append(part)
            continue
        prefix, ranges = m.groups()
        for r in ranges.split(","):
            lo, _, hi = r.partition("-")
            if hi and lo.isdigit() and hi.isdigit():
                out += [f"{prefix}{i:0{len(lo)}d}" for i in range(int(lo), int(hi) + 1)]
            else:
                out.append(prefix + lo)
    return [n for n in out if valid_node(n)]


@dataclass
class Nodes:
    """Node-level failures by node, and the nodes excluded for them: a node with `failures`
    of them within `window_s` is left out of every later submission of the run."""

    failures: int = 2
    window_s: float = 3600.0
    clock: Callable[[], float] = time.monotonic
    seen: dict[str, list[float]] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)  # node -> failures when excluded

    def failed(self, node_list: str) -> list[str]:
        """Count a node-level failure on the job's nodes; returns the nodes newly excluded."""
        now, new = self.clock(), []
        for node in expand_nodes(node_list):
            times = [t for t in self.seen.get(node, []) if now - t <= self.window_s] + [now]
            self.seen[node] = times
            if node not in self.excluded and len(times) >= max(1, self.failures):
                self.excluded[node] = len(times)
                new.append(node)
        return new

    def exclude(self) -> str | None:
        """The value of sbatch's --exclude ("" never: None when no node is excluded)."""
        names = sorted(n for n in self.excluded if valid_node(n))
        return ",".join(names) or None

    def report(self) -> str:
        if not self.excluded:
            return "no node excluded"
        return "excluded node(s) " + ", ".join(f"{n} (after {k} node-level failure(s))"
                                                for n, k in sorted(self.excluded.items()))


def more_memory(mem_mb: int | None, factor: float, ceiling_mb: int | None) -> int | None:
    """The memory of a retry after an out-of-memory kill: `factor` times it, or None past
    the ceiling (default four times the first request) or without a request to grow."""
    if not mem_mb:
        return None
    mem = math.ceil(mem_mb * factor)
    return mem if mem <= (ceiling_mb or mem_mb * 4) else None
