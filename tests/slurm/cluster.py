"""A real single-node SLURM cluster for tests: start/stop it and read it back.

    from tests.slurm import cluster            # or: import cluster (from tests/slurm)
    c = cluster.start()                         # accounting through slurmdbd (sacct works)
    c = cluster.start(accounting=False)         # no slurmdbd: sacct fails, squeue works
    cluster.stop()

``start`` runs ``start.sh`` (idempotent: a cluster already up in the same mode is
reused, one in the other mode is restarted).  Client commands (sbatch, squeue,
sacct, scontrol) then work from any process without extra environment, because
``/etc/slurm/slurm.conf`` points at the generated config.

``require(accounting)`` is what pytest fixtures call: it starts the cluster, or
skips the test when SLURM cannot be started here -- except under ``CI=true``,
where it fails instead, so that CI never silently skips SLURM tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
START_SH = HERE / "start.sh"
STOP_SH = HERE / "stop.sh"

TERMINAL_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
    "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT",
}


class SlurmError(RuntimeError):
    pass


def state_dir() -> Path:
    return Path(os.environ.get("PRUNEGEN_SLURM_DIR", "/tmp/prunegen-slurm"))


@dataclasses.dataclass(frozen=True)
class Cluster:
    state_dir: Path
    accounting: bool
    output: str  # what start.sh printed

    @property
    def conf(self) -> Path:
        return self.state_dir / "slurm.conf"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"


def available() -> tuple[bool, str]:
    """Whether start() can be expected to work here, and if not, why."""
    if os.name != "posix" or not Path("/proc").is_dir():
        return False, "SLURM test cluster needs Linux"
    if os.geteuid() != 0:
        return False, "SLURM test cluster needs root (it starts munged/slurmctld/slurmd)"
    have_slurm = all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged"))
    if not have_slurm and not shutil.which("apt-get"):
        return False, "no SLURM binaries and no apt-get to install them"
    return True, ""


def start(accounting: bool = True, timeout: float = 600) -> Cluster:
    """Start (or reuse) the cluster; raises SlurmError with the script's output on failure."""
    cmd = ["bash", str(START_SH)] + ([] if accounting else ["--no-accounting"])
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise SlurmError(f"start.sh timed out after {timeout}s:\n{e.stdout or ''}{e.stderr or ''}")
    out = p.stdout + p.stderr
    if p.returncode != 0:
        raise SlurmError(f"start.sh failed (exit {p.returncode}):\n{out}")
    return Cluster(state_dir=state_dir(), accounting=accounting, output=out)


def stop(timeout: float = 120) -> None:
    p = subprocess.run(["bash", str(STOP_SH)], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise SlurmError(f"stop.sh failed (exit {p.returncode}):\n{p.stdout}{p.stderr}")


def require(accounting: bool = True) -> Cluster:
    """For pytest fixtures: start the cluster, or skip (fail under CI=true) if impossible."""
    import pytest

    in_ci = os.environ.get("CI", "").lower() == "true"
    ok, reason = available()
    if ok:
        try:
            return start(accounting=accounting)
        except (SlurmError, OSError, subprocess.SubprocessError) as e:
            reason = f"could not start SLURM: {e}"
    if in_ci:
        pytest.fail(f"CI=true and the SLURM test cluster is unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------- read-back helpers

def run(args: list[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise SlurmError(f"{' '.join(args)} failed (exit {p.returncode}): {p.stdout}{p.stderr}")
    return p


def sbatch(args: list[str], script: str | os.PathLike) -> str:
    """Submit with ``sbatch --parsable``; return the job id (without cluster name)."""
    out = run(["sbatch", "--parsable", *args, str(script)]).stdout.strip()
    return out.split(";")[0]


_FIELD = re.compile(r"(?:^|\s)([A-Za-z][\w:/.]*)=")


def parse_scontrol_line(line: str) -> dict[str, str]:
    """Parse one line of ``scontrol show ... -o``: ``Key=value Key2=va lue ...``.

    Values may contain '=' (``TRES=cpu=1,mem=100M``) and spaces (paths), so a new
    field starts only where whitespace is followed by ``Word=``.
    """
    line = line.strip()
    matches = list(_FIELD.finditer(line))
    fields: dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        fields[m.group(1)] = line[m.end():end].strip()
    return fields


def scontrol_show_jobs(job_id: str | int) -> list[dict[str, str]]:
    """All records of a job (one per array task). Empty list if SLURM forgot it."""
    p = run(["scontrol", "show", "job", "-o", str(job_id)], check=False)
    if p.returncode != 0:
        if "Invalid job id" in p.stderr:
            return []
        raise SlurmError(f"scontrol show job {job_id}: {p.stderr.strip()}")
    return [parse_scontrol_line(l) for l in p.stdout.splitlines() if l.strip()]


def scontrol_show_job(job_id: str | int) -> dict[str, str]:
    """``scontrol show job -o ID`` as a dict (the first record for an array)."""
    recs = scontrol_show_jobs(job_id)
    if not recs:
        raise SlurmError(f"scontrol does not know job {job_id}")
    return recs[0]


def squeue_ids() -> list[str]:
    """Ids of the jobs squeue lists (array tasks as ``123_4``, pending ranges as ``123_[5-7]``)."""
    out = run(["squeue", "-h", "-o", "%i"]).stdout
    return [l.strip() for l in out.splitlines() if l.strip()]


def cancel_jobs_under(folder: str | os.PathLike) -> list[str]:
    """scancel every queued or running job whose working directory is `folder` or inside it
    (a test that failed half-way must not leave jobs holding the node's CPUs for the next
    tests); returns the ids cancelled. A no-op when the controller is not up."""
    p = run(["squeue", "-h", "-o", "%i %Z"], check=False)
    if p.returncode != 0:
        return []
    root = os.path.join(os.fspath(folder), "")
    ids = [i for i, workdir in (l.split(" ", 1) for l in p.stdout.splitlines() if " " in l)
           if os.path.join(workdir, "").startswith(root)]
    if ids:
        run(["scancel", *ids], check=False)
    return ids


def job_state(job_id: str | int) -> str | None:
    recs = scontrol_show_jobs(job_id)
    return recs[0].get("JobState") if recs else None


def wait_job(job_id: str | int, timeout: float = 120, poll: float = 0.5) -> dict[str, str]:
    """Wait until a job reaches a terminal state; return its scontrol record."""
    deadline = time.monotonic() + timeout
    while True:
        recs = scontrol_show_jobs(job_id)
        if recs and all(r.get("JobState") in TERMINAL_STATES for r in recs):
            return recs[0]
        if time.monotonic() > deadline:
            raise SlurmError(f"job {job_id} not finished after {timeout}s: {recs}")
        time.sleep(poll)


def sacct_state(job_id: str | int) -> str | None:
    """The job's State as sacct reports it (None if sacct has no row yet)."""
    out = run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", str(job_id)]).stdout
    for line in out.splitlines():
        jid, _, state = line.partition("|")
        if jid == str(job_id):
            return state.split()[0] if state else None
    return None


def wait_sacct(job_id: str | int, timeout: float = 60, poll: float = 0.2) -> str:
    """Wait until sacct reports a terminal state: accounting lags slurmctld a little
    (a job whose result file is already there may still read PENDING/RUNNING in sacct)."""
    deadline = time.monotonic() + timeout
    while True:
        state = sacct_state(job_id)
        if state in TERMINAL_STATES or time.monotonic() > deadline:
            return state or "<no sacct row>"
        time.sleep(poll)


@contextlib.contextmanager
def broken_node(name: str = "node2"):
    """`name` broken while in the block: its tasks cannot start Python (the cluster's
    TaskProlog, tests/slurm/start.sh), as on a node whose software or file system is
    broken. The second node, node2, is only in partition "flaky"."""
    flag = state_dir() / "broken-nodes"
    flag.write_text(name + "\n")
    try:
        yield name
    finally:
        flag.unlink(missing_ok=True)
