"""The SLURM test cluster itself: GPU requests, TRES, sacct with and without
accounting, and submitit (single jobs and batch -> one array) against it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.slurm import cluster

slurm_mark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm():
    return cluster.require(accounting=True)


@pytest.fixture
def acct(slurm):
    """The accounting cluster, restarted in that mode if an earlier test switched it."""
    return cluster.require(accounting=True)


JOB = """#!/bin/bash
echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}"
echo "SLURM_JOB_ID=$SLURM_JOB_ID"
echo "PWD=$PWD"
"""
GPU_ARGS = ["--gpus-per-node=1", "-c", "1", "--mem=100M", "-t", "2"]


def submit_tiny(tmp_path: Path, *extra: str) -> str:
    script = tmp_path / "job.sh"
    script.write_text(JOB)
    return cluster.sbatch([*GPU_ARGS, "-o", f"{tmp_path}/%j.out", "--chdir", str(tmp_path), *extra], script)


@slurm_mark
def test_gpu_job_runs_and_sees_a_gpu(acct, tmp_path):
    job_id = submit_tiny(tmp_path)
    rec = cluster.wait_job(job_id, timeout=60)
    assert rec["JobState"] == "COMPLETED", rec
    out = (tmp_path / f"{job_id}.out").read_text()
    assert "CUDA_VISIBLE_DEVICES=0" in out, out
    assert f"SLURM_JOB_ID={job_id}" in out
    assert f"PWD={tmp_path}" in out


@slurm_mark
def test_scontrol_reports_requested_tres(acct, tmp_path):
    job_id = submit_tiny(tmp_path, "--begin=now+1hour")  # stays pending: we only read it back
    try:
        rec = cluster.scontrol_show_job(job_id)
        assert rec["JobId"] == job_id
        assert rec["JobState"] == "PENDING"
        assert job_id in cluster.squeue_ids()
        tres = dict(kv.split("=", 1) for kv in rec["TRES"].split(","))
        assert tres["gres/gpu"] == "1", rec["TRES"]
        assert tres["cpu"] == "1"
        assert tres["mem"] == "100M"
        assert rec["TimeLimit"] == "00:02:00"
        assert rec["Partition"] == "debug"
        assert rec["StdOut"] == f"{tmp_path}/{job_id}.out"
        assert rec["WorkDir"] == str(tmp_path)
    finally:
        cluster.run(["scancel", job_id], check=False)


@slurm_mark
def test_sacct_with_accounting(acct, tmp_path):
    job_id = submit_tiny(tmp_path)
    cluster.wait_job(job_id, timeout=60)
    assert cluster.wait_sacct(job_id) == "COMPLETED"
    p = cluster.run(["sacct", "-j", job_id, "-n", "-P", "-X", "-o", "JobID,State,ExitCode,AllocTRES"])
    rows = [l.split("|") for l in p.stdout.splitlines() if l.strip()]
    assert rows and rows[0][0] == job_id, p.stdout
    assert rows[0][1] == "COMPLETED" and rows[0][2] == "0:0", rows
    assert "gres/gpu=1" in rows[0][3], rows


@slurm_mark
def test_client_commands_need_no_environment(acct, tmp_path):
    """Subprocesses (e.g. Snakemake's) find the cluster without SLURM_CONF."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
    p = subprocess.run(["sinfo", "-h", "-o", "%P %a %D %G"], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[:3] == ["debug*", "up", "1"], p.stdout
    assert "gpu:1" in p.stdout


def wait_done(jobs, timeout=120.0):
    """submitit's result() has no time-out: bound the wait here so a broken cluster fails, not hangs."""
    deadline = time.monotonic() + timeout
    while not all(j.done() for j in jobs):
        if time.monotonic() > deadline:
            pytest.fail(f"submitit jobs not done after {timeout}s: {[(j.job_id, j.state) for j in jobs]}")
        time.sleep(0.5)


@slurm_mark
def test_submitit_single_job(acct, tmp_path):
    submitit = pytest.importorskip("submitit")

    def work(x):  # local function: cloudpickle sends it by value
        import os
        return x * 2, os.environ.get("SLURM_JOB_ID")

    ex = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    ex.update_parameters(slurm_partition="debug", timeout_min=2, cpus_per_task=1, mem_gb=0.2)
    job = ex.submit(work, 21)
    wait_done([job])
    value, seen_id = job.result()
    assert value == 42
    assert seen_id == job.job_id
    assert cluster.wait_sacct(job.job_id) == "COMPLETED"
    # submitit reads sacct too (result() can come back before sacct has caught up).
    assert job.watcher.get_state(job.job_id, mode="force") == "COMPLETED"


@slurm_mark
def test_submitit_batch_is_one_array(acct, tmp_path):
    submitit = pytest.importorskip("submitit")

    def square(x):
        return x * x

    ex = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    ex.update_parameters(slurm_partition="debug", timeout_min=2, cpus_per_task=1, mem_gb=0.2)
    with ex.batch():
        jobs = [ex.submit(square, i) for i in range(3)]
    ids = [j.job_id for j in jobs]
    array_ids = {i.split("_")[0] for i in ids}
    assert len(array_ids) == 1, ids  # one sbatch
    (array_id,) = array_ids
    assert sorted(ids) == [f"{array_id}_{k}" for k in range(3)], ids
    wait_done(jobs)
    assert [j.result() for j in jobs] == [0, 1, 4]
    # SLURM itself sees one array job with three tasks.
    recs = cluster.scontrol_show_jobs(array_id)
    if recs:  # still remembered (MinJobAge)
        assert {r["ArrayJobId"] for r in recs} == {array_id}
        assert sorted(r["ArrayTaskId"] for r in recs) == ["0", "1", "2"]


@slurm_mark
def test_without_accounting_sacct_fails_squeue_works(slurm, tmp_path):
    try:
        c = cluster.require(accounting=False)
        assert not c.accounting
        p = cluster.run(["sacct", "-n", "-X"], check=False)
        assert p.returncode != 0
        assert "accounting storage is disabled" in (p.stdout + p.stderr).lower()
        job_id = submit_tiny(tmp_path, "--begin=now+1hour")
        assert job_id in cluster.squeue_ids()
        assert cluster.scontrol_show_job(job_id)["JobState"] == "PENDING"
        cluster.run(["scancel", job_id])
        # And a job still runs there.
        job_id = submit_tiny(tmp_path)
        assert cluster.wait_job(job_id, timeout=60)["JobState"] == "COMPLETED"
        assert "CUDA_VISIBLE_DEVICES=0" in (tmp_path / f"{job_id}.out").read_text()
    finally:
        cluster.start(accounting=True)  # leave the default mode for whoever comes next


def test_require_skips_or_fails_under_ci(monkeypatch):
    """No SLURM here: skip on a developer's machine, fail under CI=true. Needs no daemons."""
    monkeypatch.setattr(cluster, "available", lambda: (False, "no slurm for this test"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no slurm for this test"):
        cluster.require()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        cluster.require()
    # A start that fails is reported the same way.
    monkeypatch.setattr(cluster, "available", lambda: (True, ""))
    def broken(accounting=True):
        raise cluster.SlurmError("start.sh failed (exit 1): boom")
    monkeypatch.setattr(cluster, "start", broken)
    with pytest.raises(pytest.fail.Exception, match="boom"):
        cluster.require()


def test_parse_scontrol_line():
    rec = cluster.parse_scontrol_line(
        "JobId=7 JobName=a b JobState=PENDING TRES=cpu=1,mem=100M,node=1,gres/gpu=1 "
        "Command=/tmp/x y/job.sh WorkDir=/tmp/x y TresPerNode=gres:gpu:1"
    )
    assert rec["JobId"] == "7"
    assert rec["JobName"] == "a b"
    assert rec["TRES"] == "cpu=1,mem=100M,node=1,gres/gpu=1"
    assert rec["Command"] == "/tmp/x y/job.sh"
    assert rec["WorkDir"] == "/tmp/x y"
    assert rec["TresPerNode"] == "gres:gpu:1"
