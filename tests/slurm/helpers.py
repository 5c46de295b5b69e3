"""What the real-SLURM tests share: the paths, a PATH shim that logs every SLURM command,
Snakemake runs through profiles/slurm, waiting, sacct's view of a run, and the local
reference run whose tables a SLURM run must equal."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.slurm import cluster

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "Snakefile"
PROFILE = REPO / "profiles" / "slurm"
SMOKE = REPO / "workflow" / "studies" / "smoke.yaml"
PY = sys.executable
SNAKEMAKE = [PY, "-m", "snakemake"]
WALL_CLOCK = ("seconds", "wall_seconds")
SHIMMED = ("sbatch", "sacct", "squeue", "scontrol", "scancel")
SLURM_BINARIES = {
    "sbatch", "srun", "salloc", "squeue", "sacct", "sacctmgr", "scontrol", "scancel", "sinfo",
    "sattach", "sbcast", "scrontab", "sdiag", "sprio", "sreport", "sshare", "sstat", "strigger",
    "sview", "sh5util", "slurmctld", "slurmd", "slurmdbd", "slurmstepd",
}
POLL_S = 1  # --seconds-between-status-checks in these tests

slurm_mark = pytest.mark.slurm

# A study for requeue/cancel: a quick cell and a slow one (enough epochs to be caught
# mid-training); `merge` is the target (figures need levels >= 1).
LONG_STUDY = """\
study: long
device: cpu
benchmarks:
  quick:
    dataset: digits
    model: {name: mlp, hidden: [64, 32]}
    data: {val_size: 180}
    train: {epochs: 2, batch_size: 64, lr: 0.05, momentum: 0.9, weight_decay: 1.0e-4}
    prune: {fraction: 0.2}
    resources: {gpus: 0, cpus: 1, mem_mb: 1000, runtime_min: 5}
  slow:
    dataset: digits
    model: {name: mlp, hidden: [64, 32]}
    data: {val_size: 180}
    train: {epochs: 100, batch_size: 64, lr: 0.05, momentum: 0.9, weight_decay: 1.0e-4}
    prune: {fraction: 0.2}
    resources: {gpus: 1, cpus: 1, mem_mb: 1000, runtime_min: 5}
arms: [dense]
levels: 0
noise: [0.0]
seeds: [0]
"""
SLOW_EPOCHS = 100
CELL = "cells/benchmark={b}/arm=dense/noise=0.0/seed=0/level=0"

# The engine's own local run of a study, in one process (one thread, like a cell job):
# the reference the SLURM runs must reproduce.
REFERENCE = """\
import os, sys
os.environ["OMP_NUM_THREADS"] = "1"
import torch
torch.set_num_threads(1)
from prunegen.analysis.merge import merge
from prunegen.engine.run import run
from prunegen.study import chains
from prunegen.study.load import load_study

study = load_study(sys.argv[1], {"results_root": sys.argv[2]})
def go(c):
    for p in chains.parents(c):
        go(p)
    run(c)
for c in study.cells():
    go(c)
merge(study)
"""


# =========================================================================== helpers

def make_shim(tmp: Path) -> tuple[Path, Path]:
    """A bin folder whose sbatch/sacct/squeue/scontrol/scancel log each call (time,
    name, args, exit code, first line of output) to a file, then behave as the real one."""
    bindir, log = tmp / "shim-bin", tmp / "slurm-calls.log"
    bindir.mkdir(parents=True, exist_ok=True)
    for name in SHIMMED:
        real = shutil.which(name)
        if real is None:
            continue
        script = bindir / name
        script.write_text(f"""#!/bin/bash
err=$(mktemp)
out=$({real} "$@" 2>"$err"); rc=$?
printf '%s\\t%s\\t%s\\t%s\\t%s\\n' "$(date +%s.%N)" {name} "$*" "$rc" "$(printf '%s' "$out" | head -n1)" >> {log}
cat "$err" >&2; rm -f "$err"
[ -n "$out" ] && printf '%s\\n' "$out"
exit $rc
""")
        script.chmod(0o755)
    log.touch()
    return bindir, log


def read_shim(log: Path) -> list[dict]:
    calls = []
    for line in log.read_text().splitlines():
        t, name, args, rc, out = (line.split("\t") + [""] * 5)[:5]
        calls.append({"t": float(t), "name": name, "args": args, "rc": int(rc or 0), "out": out})
    return calls


def env_with(path_prefix: Path | None = None, **extra) -> dict:
    env = dict(os.environ)
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def smk_cmd(workdir: Path, *args: str, profile: Path = PROFILE, snakefile: Path = SNAKEFILE,
            workers: int = 0, keep_files_days: float = 1) -> list[str]:
    """The profile's command. `workers`: its --prunegen-workers; 0 (one SLURM job per cell)
    unless a test is about worker jobs (tests/slurm/test_workers.py), so that what a fault
    does to a cell's own job stays pinned for that mode too. `keep_files_days`: 1 keeps the
    submitit files and cell logs the tests read after a run; 0 (the profile's) removes
    those of what succeeded (tests/slurm/test_bad_days.py)."""
    return [*SNAKEMAKE, "--profile", str(profile), "--snakefile", str(snakefile), "-d", str(workdir),
            "--seconds-between-status-checks", str(POLL_S), "--prunegen-workers", str(workers),
            "--prunegen-keep-files-days", f"{keep_files_days:g}", *args]


def run_smk(cmd: list[str], log: Path, env: dict | None = None, timeout: float = 600) -> tuple[int, str]:
    """Run Snakemake to the end (killing it, and failing, if it hangs)."""
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            pytest.fail(f"snakemake hung (> {timeout}s): {' '.join(cmd)}\n{log.read_text()[-4000:]}")
    return rc, log.read_text()


def _sigint_default() -> None:
    # A process started in the background of a non-interactive shell inherits SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler: the tests' Ctrl-C
    # would be lost when pytest itself was started that way (as by `cmd &`).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_smk(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    f = open(log, "w")
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=env, start_new_session=True, preexec_fn=_sigint_default)
    p._logfile = f  # type: ignore[attr-defined]
    return p


def finish(p: subprocess.Popen, log: Path, timeout: float) -> tuple[int, str]:
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        pytest.fail(f"snakemake hung (> {timeout}s):\n{log.read_text()[-4000:]}")
    finally:
        p._logfile.close()  # type: ignore[attr-defined]
    return rc, log.read_text()


def wait_for(cond, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


class SqueueRecorder(threading.Thread):
    """Samples squeue every second: the jobs SLURM itself lists with our working dir."""

    def __init__(self, workdir: Path):
        super().__init__(daemon=True)
        self.workdir = str(workdir)
        self.seen: dict[str, dict] = {}
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            p = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%j|%T|%Z|%k"], capture_output=True, text=True)
            for line in p.stdout.splitlines():
                jid, name, state, wd, comment = (line.split("|") + [""] * 5)[:5]
                if wd == self.workdir:
                    self.seen.setdefault(jid, {"name": name, "comment": comment, "states": set()})["states"].add(state)
            self._halt.wait(1.0)

    def stop(self):
        self._halt.set()
        self.join(10)


def sacct_jobs(workdir: Path) -> dict[str, dict]:
    """Accounting's record of every job that ran in ``workdir`` (array tasks one by one)."""
    out = cluster.run(["sacct", "-X", "-n", "-P", "-S", "now-2hours", "-o",
                       "JobID,JobName,State,WorkDir,AllocCPUS,ReqTRES,Comment"]).stdout
    jobs = {}
    for line in out.splitlines():
        jid, name, state, wd, cpus, tres, comment = (line.split("|") + [""] * 7)[:7]
        if wd == str(workdir):
            jobs[jid] = {"name": name, "state": state.split()[0], "cpus": cpus, "tres": tres,
                         "rule": re.split(r"[\[:]", comment)[0]}
    return jobs


def submitit_folder(workdir: Path) -> Path:
    runs = sorted((workdir / ".snakemake" / "submitit").iterdir())
    assert runs, "no submitit run folder"
    return runs[-1]


def assert_submitit_files(folder: Path, job_id: str, success: bool = True) -> None:
    base = job_id.split("_")[0]
    for f in (f"{job_id}_submitted.pkl", f"{job_id}_0_log.out", f"{job_id}_0_log.err", f"{base}_submission.sh"):
        assert (folder / f).is_file(), f"{folder / f} missing"
    if success:
        with open(folder / f"{job_id}_0_result.pkl", "rb") as fh:
            assert pickle.load(fh)[0] == "success"
        assert "Job completed successfully" in (folder / f"{job_id}_0_log.err").read_text() + \
            (folder / f"{job_id}_0_log.out").read_text()


def job_of(folder: Path, needle: str) -> str:
    """The SLURM job whose own stdout log names ``needle`` (e.g. 'benchmark=slow')."""
    for f in sorted(folder.glob("*_0_log.out")):
        if needle in f.read_text(errors="replace"):
            return f.name[: -len("_0_log.out")]
    return ""


def reference_run(study: Path, root: Path) -> None:
    root.parent.mkdir(parents=True, exist_ok=True)
    script = root.parent / "reference.py"
    script.write_text(REFERENCE)
    p = subprocess.run([PY, str(script), str(study), str(root)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr


def assert_tables_equal(study_root: Path, ref_root: Path, tables=("summary", "history")) -> None:
    for t in tables:
        a = pd.read_parquet(study_root / "tables" / f"{t}.parquet")
        b = pd.read_parquet(ref_root / "tables" / f"{t}.parquet")
        drop = [c for c in WALL_CLOCK if c in a.columns]
        keys = [c for c in ("benchmark", "arm", "noise", "seed", "level", "cycle", "epoch") if c in a.columns]
        a = a.drop(columns=drop).sort_values(keys, ignore_index=True)
        b = b.drop(columns=drop).sort_values(keys, ignore_index=True)
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=f"tables/{t}")


def job_stats(output: str) -> dict[str, int]:
    """Snakemake's "Job stats" table (the jobs a run had to do)."""
    m = re.search(r"Job stats:\njob\s+count\n[- ]+\n((?:\S+\s+\d+\n)+)", output)
    assert m, "no Job stats in Snakemake's output"
    return {k: int(v) for k, v in (l.split() for l in m.group(1).splitlines()) if k != "total"}


