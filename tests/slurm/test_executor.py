"""`snakemake --profile profiles/slurm` against the real single-node SLURM of
tests/slurm (issue 5, "Done when" 1-7). Every claim is read back from SLURM
(squeue/scontrol/sacct), from the jobs' own log files, or from a PATH shim that
logs each call of sbatch/sacct/squeue/scontrol/scancel -- never from the
executor's own report.

The first tests need no SLURM (mapping, watcher logic with a fake SLURM, plugin
discovery, dry run without SLURM binaries). The others are marked ``slurm``: they
skip where SLURM cannot be started, and fail under CI=true.
"""

from __future__ import annotations

import json
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

try:
    from tests.slurm import cluster
except ImportError:  # run from another root
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cluster  # type: ignore[no-redef]

from prunegen import slurm

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
from prunegen.analysis import merge
from prunegen.cell import run
from prunegen.config import load_study

study = load_study(sys.argv[1], {"results_root": sys.argv[2]})
def go(c):
    for p in c.parents():
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


def smk_cmd(workdir: Path, *args: str, profile: Path = PROFILE, snakefile: Path = SNAKEFILE) -> list[str]:
    return [*SNAKEMAKE, "--profile", str(profile), "--snakefile", str(snakefile), "-d", str(workdir),
            "--seconds-between-status-checks", str(POLL_S), *args]


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


# =========================================================================== no SLURM needed

def test_request_maps_resources_to_submitit_parameters():
    r = slurm.Request(cpus=4, mem_mb=12000, runtime_min=90, gpus=1, gpu_model="a100", partition="gpu",
                      account="lab", constraint="ib", qos="high", extra="--exclusive --mail-type=FAIL -x n13",
                      job_name="smk-cell")
    p = r.submitit_parameters()
    assert p["cpus_per_task"] == 4 and p["mem"] == "12000M" and p["time"] == 90
    assert p["gpus_per_node"] == "a100:1" and p["partition"] == "gpu" and p["account"] == "lab"
    assert p["constraint"] == "ib" and p["qos"] == "high" and p["job_name"] == "smk-cell"
    assert p["additional_parameters"] == {"exclusive": True, "mail-type": "FAIL", "exclude": "n13"}
    assert slurm.Request(gpus=2).submitit_parameters()["gpus_per_node"] == 2
    assert "gpus_per_node" not in slurm.Request().submitit_parameters()
    # the sbatch script submitit would write (no SLURM needed for that)
    from submitit.slurm.slurm import _make_sbatch_string

    script = _make_sbatch_string(command="true", folder="/f", **p)
    for line in ("--cpus-per-task=4", "--mem=12000M", "--time=90", "--gpus-per-node=a100:1", "--partition=gpu",
                 "--account=lab", "--constraint=ib", "--qos=high", "--exclusive", "--exclude=n13"):
        assert f"#SBATCH {line}" in script, (line, script)


def fake_slurm(table: dict[str, object], calls: list):
    """A runner answering like SLURM from ``table``: command name -> (rc, stdout, stderr)
    or a callable(args) giving that."""
    def run(args):
        calls.append(args)
        answer = table[args[0]]
        rc, out, err = answer(args) if callable(answer) else answer
        return subprocess.CompletedProcess(args, rc, out, err)
    return run


def test_watcher_one_sacct_call_for_all_jobs():
    """One sacct call for all jobs; plus, when some are pending, one squeue call for them
    (the controller's live pending reason: sacct's is slurmdbd's copy, often stale)."""
    calls: list = []
    sacct_out = "7_0|COMPLETED|0:0|None\n7_1|RUNNING|0:0|None\n7_[2-39%40]|PENDING|0:0|Priority\n8|CANCELLED by 0|0:15|None\n"
    squeue_out = "".join(f"7_{i}|PENDING|Priority\n" for i in range(2, 40))
    w = slurm.StatusWatcher(runner=fake_slurm({"sacct": (0, sacct_out, ""), "squeue": (0, squeue_out, "")}, calls))
    ids = [f"7_{i}" for i in range(40)] + ["8"]
    st = w.poll(ids)
    assert [c[0] for c in calls] == ["sacct", "squeue"] and calls[0][-1] == "7,8" and calls[1][-1] == "7"
    assert st["7_2"].reason == "Priority"
    calls.clear()
    w.poll(["7_1", "8"])
    assert [c[0] for c in calls] == ["sacct"]  # nothing pending: sacct alone
    calls.clear()
    assert st["7_0"].outcome == "success" and st["7_1"].outcome == "active"
    assert all(st[f"7_{i}"].state == "PENDING" for i in range(2, 40))
    assert st["8"].outcome == "failed" and st["8"].state == "CANCELLED"


def test_watcher_without_accounting_never_waits(tmp_path):
    """sacct fails -> one squeue call; jobs squeue no longer lists -> scontrol; jobs
    SLURM forgot -> submitit's result pickle; and sacct is not tried again."""
    calls: list = []
    ok, err = tmp_path / "5_0_result.pkl", tmp_path / "5_1_result.pkl"
    ok.write_bytes(pickle.dumps(("success", 0)))
    err.write_bytes(pickle.dumps(("error", "Traceback...\nSlurmError: boom")))

    def scontrol(args):
        if args[-1] == "5":
            return 1, "", "slurm_load_jobs error: Invalid job id specified"
        return 0, "JobId=9 JobName=x JobState=CANCELLED Reason=None Dependency=(null)\n", ""

    table = {
        "sacct": (1, "", "sacct: error: Slurm accounting storage is disabled"),
        "squeue": (0, "5_2|RUNNING|None\n5_3|PENDING|Resources\n", ""),
        "scontrol": scontrol,
    }
    w = slurm.StatusWatcher(runner=fake_slurm(table, calls))
    for i in range(4):
        w.register(f"5_{i}", tmp_path / f"5_{i}_result.pkl")
    st = w.poll(["5_0", "5_1", "5_2", "5_3", "9"])
    assert [c[0] for c in calls] == ["sacct", "squeue", "scontrol", "scontrol"]
    assert st["5_0"].outcome == "success" and st["5_0"].source == "result-pickle"
    assert st["5_1"].outcome == "failed" and "boom" in st["5_1"].reason
    assert st["5_2"].outcome == "active" and st["5_3"].outcome == "active"
    assert st["9"].outcome == "failed" and st["9"].source == "scontrol"
    calls.clear()
    w.poll(["5_2", "5_3"])
    assert [c[0] for c in calls] == ["squeue"]  # one query per poll from now on


def test_plugin_is_discovered():
    p = subprocess.run([*SNAKEMAKE, "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert re.search(r"--executor \{[^}]*\bprunegen\b", p.stdout), "executor 'prunegen' not listed"
    assert "--prunegen-partition" in p.stdout


def test_dry_run_without_slurm(tmp_path):
    """Done 6: `snakemake -n --profile profiles/slurm` on a machine with no SLURM at all."""
    bindir = tmp_path / "bin-no-slurm"
    bindir.mkdir()
    for d in os.environ["PATH"].split(":"):
        if not d or not Path(d).is_dir() or Path(d).resolve() == Path(PY).parent.resolve():
            continue
        for exe in Path(d).iterdir():
            if exe.name not in SLURM_BINARIES and not (bindir / exe.name).exists():
                try:
                    (bindir / exe.name).symlink_to(exe)
                except OSError:
                    pass
    path = f"{Path(PY).parent}:{bindir}"
    assert not any(shutil.which(b, path=path) for b in SLURM_BINARIES)
    env = dict(os.environ, PATH=path)
    p = subprocess.run([*SNAKEMAKE, "-n", "--profile", str(PROFILE), "--snakefile", str(SNAKEFILE),
                        "-d", str(tmp_path), "--config", f"study={SMOKE}", f"results_root={tmp_path}/results"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout + p.stderr
    assert job_stats(out) == {"cell": 22, "merge": 1, "figures": 1, "all": 1}
    assert out.count("rule cell:") == 22
    assert "This was a dry-run" in out


# =========================================================================== real SLURM, accounting

@pytest.fixture(scope="module")
def slurm_up():
    return cluster.require(accounting=True)


@pytest.fixture
def acct(slurm_up):
    """The accounting cluster (restarted in that mode if a test switched it)."""
    return cluster.require(accounting=True)


@slurm_mark
def test_resources_reach_slurm(acct, tmp_path):
    """Done 2: a rule asking 1 GPU, 2 CPUs, 321 MB, 7 minutes (+ an extra sbatch flag)
    is submitted with exactly those; scontrol shows them."""
    (tmp_path / "Snakefile").write_text("""
rule probe:
    output: "probe.txt"
    threads: 2
    resources: mem_mb=321, runtime=7, gpus=1, slurm_extra="--comment=prunegen-probe"
    shell: "echo CUDA=$CUDA_VISIBLE_DEVICES CPUS=$SLURM_CPUS_PER_TASK MEM=$SLURM_MEM_PER_NODE > {output}"
""")
    bindir, calls_log = make_shim(tmp_path)
    rc, out = run_smk(smk_cmd(tmp_path, snakefile=tmp_path / "Snakefile"), tmp_path / "smk.log",
                      env=env_with(bindir), timeout=180)
    assert rc == 0, out[-4000:]
    sb = [c for c in read_shim(calls_log) if c["name"] == "sbatch"]
    assert len(sb) == 1
    job_id = re.search(r"job (\d+)", sb[0]["out"]).group(1)
    rec = cluster.scontrol_show_job(job_id)
    tres = dict(kv.split("=", 1) for kv in rec["TRES"].split(","))
    assert tres["gres/gpu"] == "1", rec["TRES"]
    assert tres["cpu"] == "2" and rec["NumCPUs"] == "2" and rec.get("CPUs/Task") == "2", rec
    assert tres["mem"] == "321M", rec["TRES"]
    assert rec["TimeLimit"] == "00:07:00"
    assert rec["Partition"] == "debug"  # the profile's prunegen-partition
    assert rec["Comment"] == "prunegen-probe"
    # one job name per run (scancel --name of it cancels that run only); a --comment in
    # slurm_extra wins over the executor's own (rule and wildcards)
    assert re.fullmatch(r"smk-[0-9a-f]{6}", rec["JobName"]) and rec["JobState"] == "COMPLETED", rec
    assert f"SLURM jobs named {rec['JobName']} (cancel this run's jobs: scancel --name={rec['JobName']})" in out
    assert (tmp_path / "probe.txt").read_text().split() == ["CUDA=0", "CPUS=2", "MEM=321"]


@slurm_mark
def test_forty_ready_jobs_one_array_one_query_per_poll(acct, tmp_path):
    """Done 5 (+ Ctrl-C): 40 ready jobs -> one sbatch (an array of 40); each status poll
    is one sacct call for all of them; Ctrl-C cancels them with one scancel."""
    (tmp_path / "Snakefile").write_text("""
rule all:
    input: expand("out/{i}.txt", i=range(40))

rule work:
    output: "out/{i}.txt"
    resources: mem_mb=100, runtime=2
    shell: "sleep 120; echo {wildcards.i} > {output}"
""")
    bindir, calls_log = make_shim(tmp_path)
    p = start_smk(smk_cmd(tmp_path, "--jobs", "40", snakefile=tmp_path / "Snakefile"), tmp_path / "smk.log",
                  env=env_with(bindir))
    try:
        def polls_after_submit():
            calls = read_shim(calls_log)
            sb = [c for c in calls if c["name"] == "sbatch"]
            return sb and len([c for c in calls if c["name"] in ("sacct", "squeue") and c["t"] > sb[-1]["t"]]) >= 4
        wait_for(polls_after_submit, 120, "the submission and 4 status polls")
        array_id = re.search(r"job (\d+)", [c for c in read_shim(calls_log) if c["name"] == "sbatch"][0]["out"]).group(1)
        tasks = [r for r in cluster.scontrol_show_jobs(array_id) if r.get("WorkDir") == str(tmp_path)]
        listed = {f"{r['ArrayJobId']}_{t}" for r in tasks for t in slurm._expand_array(f"{r['ArrayJobId']}_[{r['ArrayTaskId']}]")}
        assert len(listed) == 40, listed
        assert len({r["JobName"] for r in tasks}) == 1 and tasks[0]["JobName"].startswith("smk-")
        [comment] = {r["Comment"] for r in tasks}  # the rule and each task's wildcard, in task order
        assert comment.startswith("work[40]:i=") and \
            sorted(map(int, comment.split("=")[1].split("|"))) == list(range(40)), comment
        p.send_signal(signal.SIGINT)  # Ctrl-C
        rc, out = finish(p, tmp_path / "smk.log", timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    calls = read_shim(calls_log)
    sbatch = [c for c in calls if c["name"] == "sbatch"]
    # (scontrol show partition: the partition's MaxTime, read once per run and partition)
    status = [c for c in calls if c["name"] in ("sacct", "squeue", "scontrol") and "requeue" not in c["args"]
              and not c["args"].startswith("show partition")]
    scancel = [c for c in calls if c["name"] == "scancel"]
    assert len(sbatch) == 1, sbatch  # 40 jobs, one sbatch
    # accounting on: each poll is one sacct call for all 40, then (38 pend on this 2-CPU node)
    # one squeue call for the pending ones' live reason; no scontrol
    sacct = [c for c in status if c["name"] == "sacct"]
    assert all(c["name"] in ("sacct", "squeue") for c in status), status
    assert all(a["name"] == "sacct" for a, b in zip(status, status[1:]) if b["name"] == "squeue"), status
    assert status[0]["name"] == "sacct" and len(status) <= 2 * len(sacct), status
    assert all(c["args"].endswith(f"-j {array_id}") for c in status), status  # all 40 in each call
    gaps = [b["t"] - a["t"] for a, b in zip(sacct, sacct[1:])]
    assert gaps and min(gaps) > 0.5 * POLL_S, gaps  # one sacct query per poll round
    assert len(scancel) == 1 and len(scancel[0]["args"].split()) == 40, scancel
    assert rc != 0 and "Terminating processes on user request" in out
    wait_for(lambda: not any(r.get("JobState") in ("PENDING", "RUNNING")
                             for r in cluster.scontrol_show_jobs(array_id)), 30, "the array to be cancelled")
    print(f"\n40 ready jobs: {len(sbatch)} sbatch call(s); {len(sacct)} status polls, "
          f"1 sacct call each (+ {len(status) - len(sacct)} squeue calls for pending reasons); 1 scancel for 40 jobs")


@slurm_mark
def test_submission_failure_is_reported(acct, tmp_path):
    """sbatch refusing the jobs (here: no such partition) fails them at once, with sbatch's words."""
    (tmp_path / "Snakefile").write_text("""
rule all:
    input: expand("out/{i}.txt", i=range(3))

rule work:
    output: "out/{i}.txt"
    shell: "touch {output}"
""")
    rc, out = run_smk(smk_cmd(tmp_path, "--retries", "0", "--prunegen-partition", "no-such-partition",
                              snakefile=tmp_path / "Snakefile"), tmp_path / "smk.log", timeout=120)
    assert rc != 0
    assert out.count("message: submission to SLURM failed: sbatch: error: invalid partition") == 3, out[-3000:]


@slurm_mark
def test_timeout_signal_checkpoints_and_requeues(acct, tmp_path):
    """submitit's time-out/preemption path, without Snakemake: USR2 (what SLURM sends
    signal_delay_s before the time limit, or on preemption with a grace time) makes
    ShellJob.checkpoint stop the command, submitit requeues the job, and the command runs
    again, resuming from its own state; the watcher never sees a failure meanwhile."""
    counter = tmp_path / "count"
    cmd = (f'n=$(cat {counter} 2>/dev/null || echo 0); echo "start at $n"; '
           f'while [ $n -lt 40 ]; do n=$((n+1)); echo $n > {counter}.tmp; mv {counter}.tmp {counter}; sleep 0.25; done; '
           'echo "done at $n"')
    ex = slurm.make_executor(tmp_path / "submitit", slurm.Request(cpus=1, mem_mb=100, runtime_min=5,
                                                                  partition="debug", job_name="usr2-probe"))
    [sub] = slurm.submit(ex, [slurm.ShellJob(cmd, tmp_path, label="counter")])
    watcher = slurm.StatusWatcher()
    watcher.register(sub.job_id, sub.result)
    wait_for(lambda: counter.exists() and int(counter.read_text() or 0) >= 3, 120, "the command to run")
    cluster.run(["scancel", "--signal=USR2", sub.job_id])
    outcomes = []
    def done():
        st = watcher.poll([sub.job_id])[sub.job_id]
        outcomes.append(st.outcome)
        return st.done
    wait_for(done, 180, "the requeued job to finish", poll=1.0)
    assert outcomes[-1] == "success" and "failed" not in outcomes, outcomes
    rec = cluster.scontrol_show_job(sub.job_id)
    assert rec["JobState"] == "COMPLETED" and rec["Restarts"] == "1", rec
    log = sub.stdout.read_text()
    starts = [int(n) for n in re.findall(r"^start at (\d+)$", log, re.M)]
    assert len(starts) == 2 and starts[0] == 0 and starts[1] >= 3, log
    assert "time-out or preemption: stopping the command and requeueing" in log
    stamp = r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+\) - "
    t_ck = re.search(stamp + "Calling checkpoint method", log).group(1)
    t_rq = re.search(stamp + "Requeued job", log).group(1)
    from datetime import datetime
    stop_s = (datetime.fromisoformat(t_rq) - datetime.fromisoformat(t_ck)).total_seconds()
    assert stop_s < 10, f"stopping the command took {stop_s}s"
    assert "done at 40" in log and counter.read_text().strip() == "40"
    with open(sub.result, "rb") as fh:
        assert pickle.load(fh)[0] == "success"


@pytest.fixture(scope="module")
def smoke_reference(tmp_path_factory):
    """The engine's local run of smoke.yaml (tables to compare the SLURM runs with)."""
    root = tmp_path_factory.mktemp("smoke-local") / "results"
    reference_run(SMOKE, root)
    return root / "smoke"


@slurm_mark
@pytest.mark.slow
def test_smoke_study_through_slurm(acct, tmp_path, smoke_reference):
    """Done 1: the profile runs smoke.yaml through SLURM: SLURM lists the jobs, each job's
    files are in its submitit folder, and the merged tables equal a local run's."""
    bindir, calls_log = make_shim(tmp_path)
    rec = SqueueRecorder(tmp_path)
    rec.start()
    t0 = time.monotonic()
    try:
        rc, out = run_smk(smk_cmd(tmp_path, "--config", f"study={SMOKE}", f"results_root={tmp_path}/results"),
                          tmp_path / "smk.log", env=env_with(bindir), timeout=900)
    finally:
        rec.stop()
    assert rc == 0, out[-5000:]
    elapsed = time.monotonic() - t0
    # SLURM's own records (sacct) of the jobs that ran in this working directory
    jobs = sacct_jobs(tmp_path)
    rules = sorted(j["rule"] for j in jobs.values())  # from each job's --comment
    assert rules.count("cell") == 22 and rules.count("merge") == 1 and rules.count("figures") == 1, jobs
    assert len({j["name"] for j in jobs.values()}) == 1, jobs  # one job name for the whole run
    assert {j["state"] for j in jobs.values()} == {"COMPLETED"}, jobs
    assert set(rec.seen) <= set(jobs) and len(rec.seen) >= 12, rec.seen  # squeue listed them while they ran
    folder = submitit_folder(tmp_path)
    for jid in jobs:
        assert_submitit_files(folder, jid)
    calls = read_shim(calls_log)
    sbatch = [c for c in calls if c["name"] == "sbatch"]
    status = [c for c in calls if c["name"] in ("sacct", "squeue", "scontrol")
              and not c["args"].startswith("show partition")]
    assert len(sbatch) < len(jobs)  # ready jobs went together, as arrays
    # one sacct call per poll, then one squeue call when some jobs pend (their live reason)
    polls = [c for c in status if c["name"] == "sacct"]
    assert {c["name"] for c in status} <= {"sacct", "squeue"}, status
    assert all(a["name"] == "sacct" for a, b in zip(status, status[1:]) if b["name"] == "squeue"), status
    assert status[0]["name"] == "sacct" and len(status) <= 2 * len(polls), status
    assert_tables_equal(tmp_path / "results" / "smoke", smoke_reference)
    print(f"\nsmoke through SLURM: {len(jobs)} jobs in {len(sbatch)} sbatch calls, "
          f"{len(polls)} polls (one sacct call each, + {len(status) - len(polls)} squeue calls), {elapsed:.0f}s")


def start_long(tmp_path: Path, *extra: str, env=None) -> tuple[subprocess.Popen, Path, Path]:
    study = tmp_path / "long.yaml"
    study.write_text(LONG_STUDY)
    root = tmp_path / "results"
    log = tmp_path / f"smk-{int(time.time() * 1000)}.log"
    cmd = smk_cmd(tmp_path, "merge", "--retries", "0", *extra, "--config", f"study={study}", f"results_root={root}")
    return start_smk(cmd, log, env=env), log, study


def catch_slow_cell(tmp_path: Path, p: subprocess.Popen, log: Path) -> tuple[str, Path]:
    """Wait until the slow cell has written an epoch checkpoint; return its SLURM job id."""
    cell = tmp_path / "results" / "long" / CELL.format(b="slow")
    def ready():
        if p.poll() is not None:
            pytest.fail(f"snakemake ended early:\n{log.read_text()[-4000:]}")
        return (cell / "checkpoint.pt").exists()
    wait_for(ready, 240, "the slow cell's first epoch checkpoint", poll=0.1)
    assert not (cell / "cell.json").exists(), "the slow cell finished before it could be interrupted"
    job_id = wait_for(lambda: job_of(submitit_folder(tmp_path), "benchmark=slow"), 30, "the slow cell's job log")
    assert cluster.scontrol_show_job(job_id)["JobState"] == "RUNNING"
    return job_id, cell


@slurm_mark
@pytest.mark.slow
def test_requeue_resumes_from_checkpoint(acct, tmp_path):
    """Done 3: `scontrol requeue` of a cell mid-training: the job restarts, the cell
    resumes from its epoch checkpoint, and the results equal an uninterrupted run."""
    p, log, study = start_long(tmp_path)
    try:
        job_id, cell = catch_slow_cell(tmp_path, p, log)
        cluster.run(["scontrol", "requeue", job_id])
        rc, out = finish(p, log, timeout=400)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert rc == 0, out[-5000:]
    # SLURM restarted the job (scontrol; sacct keeps both runs)
    recs = cluster.scontrol_show_jobs(job_id)
    if recs:
        assert recs[0]["Restarts"] == "1" and recs[0]["JobState"] == "COMPLETED", recs[0]
    runs = cluster.run(["sacct", "-X", "-n", "-P", "--duplicates", "-o", "JobID,State", "-j", job_id]).stdout
    assert "REQUEUED" in runs and "COMPLETED" in runs, runs
    # it ran twice and did not start over
    job_log = (submitit_folder(tmp_path) / f"{job_id}_0_log.out").read_text()
    assert "(restart 0)" in job_log and "(restart 1)" in job_log, job_log
    resumed = json.loads((cell / "cell.json").read_text())["resumed_from"]
    assert resumed is not None and 1 <= resumed["epoch"] < SLOW_EPOCHS, resumed
    rule_log = (tmp_path / "results" / "long" / "logs" / (CELL.format(b="slow") + ".log")).read_text()
    assert f"resuming from checkpoint at cycle 0 epoch {resumed['epoch']}" in rule_log
    assert not (cell / "checkpoint.pt").exists()
    # identical to an uninterrupted run
    ref = tmp_path / "reference" / "results"
    reference_run(study, ref)
    assert_tables_equal(tmp_path / "results" / "long", ref / "long")
    for f in ("summary", "history"):
        a = pd.read_parquet(cell / f"{f}.parquet")
        b = pd.read_parquet(ref / "long" / CELL.format(b="slow") / f"{f}.parquet")
        drop = [c for c in WALL_CLOCK if c in a.columns]
        pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop), check_exact=True)
    print(f"\nrequeued job {job_id}: resumed at epoch {resumed['epoch']} of {SLOW_EPOCHS}")


def cancel_and_check(tmp_path: Path, env=None) -> tuple[str, str, Path]:
    """scancel the slow cell's job mid-training; Snakemake must report that job's failure
    with its log paths, and end (not hang)."""
    p, log, study = start_long(tmp_path, env=env)
    try:
        job_id, cell = catch_slow_cell(tmp_path, p, log)
        cluster.run(["scancel", job_id])
        t0 = time.monotonic()
        rc, out = finish(p, log, timeout=120)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert rc != 0
    folder = submitit_folder(tmp_path)
    m = re.search(rf"Error in rule cell:\n\s+message: SLURM job {job_id} ended CANCELLED.*?\n"
                  rf"submitit log: (\S+)\nsubmitit err: (\S+)\nrule log: (\S+)\n", out)
    assert m, out[-5000:]
    assert Path(m.group(1)) == folder / f"{job_id}_0_log.out" and Path(m.group(1)).is_file()
    assert Path(m.group(2)) == folder / f"{job_id}_0_log.err" and Path(m.group(2)).is_file()
    assert Path(m.group(3)).is_file() and "benchmark=slow" in m.group(3)
    assert f"external_jobid: {job_id}" in out
    assert cluster.scontrol_show_job(job_id)["JobState"] == "CANCELLED"
    print(f"\ncancelled job {job_id}: reported failed {took:.1f}s after scancel")
    return job_id, out, study


@slurm_mark
@pytest.mark.slow
def test_scancel_reported_and_rerun_runs_only_missing(acct, tmp_path):
    """Done 4: a cancelled job is reported failed with its log paths; the same command
    again runs only the missing cell (and the merge)."""
    job_id, out, study = cancel_and_check(tmp_path)
    assert "[state from sacct]" in out
    quick = tmp_path / "results" / "long" / CELL.format(b="quick") / "cell.json"
    assert quick.exists()
    mtime = quick.stat().st_mtime_ns
    rc, out2 = run_smk(smk_cmd(tmp_path, "merge", "--retries", "0", "--config", f"study={study}",
                               f"results_root={tmp_path}/results"), tmp_path / "rerun.log", timeout=300)
    assert rc == 0, out2[-4000:]
    assert job_stats(out2) == {"cell": 1, "merge": 1}
    assert re.findall(r"wildcards: (benchmark=\w+)", out2) == ["benchmark=slow"]
    assert quick.stat().st_mtime_ns == mtime


# =========================================================================== real SLURM, no accounting

@pytest.fixture(scope="module")
def no_acct(slurm_up):
    c = cluster.require(accounting=False)
    p = subprocess.run(["sacct", "-n", "-X"], capture_output=True, text=True)
    assert p.returncode != 0 and "accounting storage is disabled" in p.stderr.lower()
    yield c
    cluster.start(accounting=True)  # leave the cluster as the other tests expect it


@slurm_mark
@pytest.mark.slow
def test_no_accounting_smoke_completes_packed(no_acct, tmp_path, smoke_reference):
    """Done 7 (and packing): with accounting disabled the smoke study completes through
    the profile -- here with cells packed into one allocation (groups, as docs/cluster.md
    says) -- with squeue/scontrol for states, and equals the local run."""
    profile = tmp_path / "profile-packed"
    profile.mkdir()
    (profile / "config.yaml").write_text((PROFILE / "config.yaml").read_text()
                                         + "\ngroups:\n  cell: chain\ngroup-components:\n  chain: 100\n"
                                         # a packed job asks for its cells' CPUs up to `cores`:
                                         # no more than this 2-CPU node has, or it never starts
                                         + "cores: 2\n")
    bindir, calls_log = make_shim(tmp_path)
    rec = SqueueRecorder(tmp_path)
    rec.start()
    try:
        rc, out = run_smk(smk_cmd(tmp_path, "--config", f"study={SMOKE}", f"results_root={tmp_path}/results",
                                  profile=profile), tmp_path / "smk.log", env=env_with(bindir), timeout=900)
    finally:
        rec.stop()
    assert rc == 0, out[-5000:]
    assert "reading job states from squeue/scontrol" in out
    calls = read_shim(calls_log)
    assert [c["name"] for c in calls if c["name"] == "sacct"] == ["sacct"]  # tried once, then squeue
    squeue = [c for c in calls if c["name"] == "squeue"]
    scontrol = [c for c in calls if c["name"] == "scontrol" and c["args"].startswith("show job")]
    assert squeue and len(scontrol) <= 2 * len(rec.seen), (len(scontrol), rec.seen)
    # SLURM listed the jobs; the cells ran packed in one job
    rules = sorted(re.split(r"[\[:]", v["comment"])[0] for v in rec.seen.values())
    assert rules.count("group-chain") == 1 and "merge" in rules and "figures" in rules, rec.seen
    folder = submitit_folder(tmp_path)
    for jid in rec.seen:
        assert_submitit_files(folder, jid)
    packed = next(j for j, v in rec.seen.items() if v["comment"].startswith("group-chain"))
    assert (folder / f"{packed}_0_log.err").read_text().count("rule cell:") == 22
    assert_tables_equal(tmp_path / "results" / "smoke", smoke_reference)
    print(f"\nno accounting, packed: {len(rec.seen)} SLURM jobs; {len(squeue)} polls of one squeue "
          f"call each, {len(scontrol)} scontrol calls for jobs squeue stopped listing")


@slurm_mark
def test_no_accounting_cancel_reported(no_acct, tmp_path):
    """Done 7: without accounting a cancelled job is still reported failed, promptly."""
    job_id, out, _ = cancel_and_check(tmp_path)
    assert re.search(r"\[state from (squeue|scontrol|result-pickle)\]", out)
