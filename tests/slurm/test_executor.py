"""`snakemake --profile profiles/slurm` against the real single-node SLURM of
tests/slurm (issue 5, "Done when" 1-7). Every claim is read back from SLURM
(squeue/scontrol/sacct), from the jobs' own log files, or from a PATH shim that
logs each call of sbatch/sacct/squeue/scontrol/scancel -- never from the
executor's own report.

The tests that need no SLURM (mapping, watcher logic with a fake SLURM, plugin discovery,
dry run without SLURM binaries) are in tests/cluster/test_slurm.py. These are marked
``slurm``: they skip where SLURM cannot be started, and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from prunegen.cluster.slurm import job as slurm_job
from prunegen.cluster.slurm import request as slurm_request
from prunegen.cluster.slurm import status as slurm_status
from prunegen.cluster.slurm import submit as slurm_submit
from tests.slurm import cluster
from tests.slurm.helpers import (
    CELL,
    LONG_STUDY,
    POLL_S,
    PROFILE,
    SLOW_EPOCHS,
    SMOKE,
    WALL_CLOCK,
    SqueueRecorder,
    assert_submitit_files,
    assert_tables_equal,
    env_with,
    finish,
    job_of,
    job_stats,
    make_shim,
    read_shim,
    reference_run,
    run_smk,
    sacct_jobs,
    smk_cmd,
    start_smk,
    submitit_folder,
    wait_for,
)

slurm_mark = pytest.mark.slurm

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
    resources: mem_mb=400, runtime=2
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
        listed = {f"{r['ArrayJobId']}_{t}" for r in tasks for t in slurm_status._expand_array(f"{r['ArrayJobId']}_[{r['ArrayTaskId']}]")}
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
    ex = slurm_submit.make_executor(tmp_path / "submitit", slurm_request.Request(cpus=1, mem_mb=100, runtime_min=5,
                                                                  partition="debug", job_name="usr2-probe"))
    [sub] = slurm_submit.submit(ex, [slurm_job.ShellJob(cmd, tmp_path, label="counter")])
    watcher = slurm_status.StatusWatcher()
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
