"""Warm worker jobs on the real test cluster (issue 27 item 2): many cells per SLURM job,
the tables of a local run, a failing cell that fails alone, and a worker requeued mid-cell
whose cell resumes elsewhere to the same records. Read back from SLURM (sacct) and from the
Parquet records, not from the executor's report alone."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.slurm import cluster
from tests.slurm.helpers import (
    REPO,
    assert_tables_equal,
    finish,
    reference_run,
    run_smk,
    smk_cmd,
    start_smk,
    wait_for,
)
from tests.slurm.test_resilience import TWO_CELLS

sys.path.insert(0, str(REPO / "benchmarks"))
import scale  # noqa: E402  (its study: N one-epoch digits cells)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
CELLS = 200
WORKERS = 8


@pytest.fixture(scope="module")
def acct():
    return cluster.require(accounting=True)  # skips where SLURM cannot start; fails under CI=true


def sacct_jobs(workdir: Path) -> list[dict]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "now-1days", "-o", "JobID,State,WorkDir,Comment"],
                         capture_output=True, text=True, check=True).stdout
    # the comment last: an array's comment may hold '|'
    rows = [dict(zip(("id", "state", "workdir", "comment"), line.split("|", 3))) for line in out.splitlines()]
    return [r for r in rows if r["workdir"] == str(workdir)]


def test_many_cells_per_worker_job_a_failing_cell_alone_and_the_tables_of_a_local_run(acct, tmp_path):
    study = tmp_path / "scale.yaml"
    study.write_text(yaml.safe_dump(scale.study(CELLS)))
    results = tmp_path / "results"
    bad = results / "scale/cells/benchmark=digits-tiny/arm=dense/noise=0.0/seed=7/level=0"
    bad.mkdir(parents=True)
    # planted: a live process holds seed 7's lock (this one), so its run fails, and only it
    (bad / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start": None}))
    cmd = smk_cmd(tmp_path, "merge", "--config", f"study={study}", f"results_root={results}", workers=WORKERS)
    t0 = time.monotonic()
    rc, out = run_smk(cmd, tmp_path / "run1.log", timeout=900)
    wall = time.monotonic() - t0
    assert rc != 0, out[-3000:]
    done = {p.parent.parent.name for p in (results / "scale/cells").rglob("cell.json")}
    assert len(done) == CELLS - 1 and "seed=7" not in done
    failed = re.findall(r"rule cell \[[^\]]*seed=(\d+)[^\]]*\] failed in worker job \S+ \(exit 2\): (.*)", out)
    assert [s for s, _ in failed] == ["7"], out[-3000:]  # named once: an error of the cell's own is not retried
    assert "not retried" in failed[0][1] and "Trying to restart" not in out
    assert all("is being written by another process" in why for _, why in failed), failed
    # the workers still running exit at the run's end (its stop file); those never started were cancelled
    jobs = wait_for(lambda: (j := sacct_jobs(tmp_path)) and not any(r["state"] in ("RUNNING", "PENDING") for r in j)
                    and j, 120, "the worker jobs to end")
    assert all(j["comment"].startswith("prunegen-worker") for j in jobs), jobs  # cells ran in worker jobs only
    ran = [j for j in jobs if not j["state"].startswith("CANCELLED")]  # (one row per started array task)
    assert 1 <= len(ran) <= WORKERS, jobs
    per_job = (CELLS - 1) / len(ran)
    assert per_job >= 10, jobs
    m = re.search(r"(\d+) cell\(s\) in (\d+) worker job\(s\) that ran", out)
    assert m and int(m.group(1)) == CELLS - 1 and int(m.group(2)) == len(ran), out[-2000:]

    (bad / ".lock").unlink()  # the holder is gone: the next run does that cell, and only it
    rc, out = run_smk(cmd, tmp_path / "run2.log", timeout=600)
    assert rc == 0, out[-3000:]
    assert "1 cell(s) in 1 worker job(s) that ran" in out, out[-2000:]
    ref = tmp_path / "ref" / "results"
    reference_run(study, ref)
    assert_tables_equal(results / "scale", ref / "scale")
    print(f"\n{CELLS} cells (one failing): {len(ran)} worker jobs ran, {per_job:.1f} cells per job, "
          f"first run {wall:.0f} s")


def test_a_worker_requeued_mid_cell_hands_it_back_and_the_cell_resumes_to_the_same_records(acct, tmp_path):
    study = tmp_path / "two.yaml"
    study.write_text(TWO_CELLS)
    results = tmp_path / "results"
    cmd = smk_cmd(tmp_path, "merge", "--config", f"study={study}", f"results_root={results}", workers=1)
    p = start_smk(cmd, tmp_path / "smk.log")
    cells = results / "two/cells/benchmark=slow/arm=dense/noise=0.0"
    first = wait_for(lambda: next((c for c in cells.glob("seed=*/level=0") if (c / "checkpoint.pt").exists()), None),
                     240, "a cell's first checkpoint")
    worker = wait_for(lambda: [j["id"] for j in sacct_jobs(tmp_path) if j["state"] == "RUNNING"], 60,
                      "the running worker job")[0]
    subprocess.run(["scontrol", "requeue", worker], check=True)
    rc, out = finish(p, tmp_path / "smk.log", 600)
    assert rc == 0, out[-4000:]
    assert "Trying to restart" not in out  # no Snakemake retry: the cell went back to the queue
    meta = json.loads((first / "cell.json").read_text())
    assert meta["resumed_from"] is not None, meta  # resumed from its checkpoint, not retrained
    runs = subprocess.run(["sacct", "-X", "-n", "-P", "--duplicates", "-j", worker, "-o", "JobID,State"],
                          capture_output=True, text=True).stdout.split()
    assert len(runs) >= 2, runs  # the worker job ran twice: requeued by SLURM
    ref = tmp_path / "ref" / "results"
    reference_run(study, ref)
    assert_tables_equal(results / "two", ref / "two")


def test_a_worker_job_with_two_slots_asks_for_two_cells_and_runs_them_at_once(acct, tmp_path):
    raw = yaml.safe_load(TWO_CELLS)
    raw["benchmarks"]["slow"]["train"]["epochs"] = 100
    raw["seeds"] = [0, 1, 2, 3]
    study = tmp_path / "four.yaml"
    study.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    cmd = smk_cmd(tmp_path, "merge", "--prunegen-worker-slots", "2", "--config", f"study={study}",
                  f"results_root={results}", workers=1)
    rc, out = run_smk(cmd, tmp_path / "run.log", timeout=600)
    assert rc == 0, out[-3000:]
    assert len(list((results / "two/cells").rglob("cell.json"))) == 4
    jobs = wait_for(lambda: (j := sacct_jobs(tmp_path)) and not any(r["state"] in ("RUNNING", "PENDING") for r in j)
                    and j, 120, "the worker job to end")
    worker = next(j["id"] for j in jobs if j["comment"].startswith("prunegen-worker"))
    cpus = subprocess.run(["sacct", "-X", "-n", "-P", "-j", worker, "-o", "AllocCPUS,ReqMem"], capture_output=True,
                          text=True).stdout.split("\n")[0].split("|")
    assert cpus[0] == "2" and cpus[1].startswith("2000"), cpus  # two cells' CPUs and memory (1000 MB each)
    done = [json.loads(p.read_text()) for p in (tmp_path / ".snakemake/submitit").glob("*/queue/*/done/*.json")]
    assert {d["worker"] for d in done} == {f"slurm-{worker}-0", f"slurm-{worker}-1"}, done
    a, b = sorted(done, key=lambda d: d["started"])[:2]
    assert b["started"] < a["ended"]  # two cells at once in one job


def test_a_partition_limits_file_sends_gpu_cells_to_the_gpu_partition_and_merge_to_the_cpu_one(acct, tmp_path):
    """Issue 30 item 3 on the real cluster: `debug` declared a GPU partition and `high` a
    CPU one (the test node has one fake GPU); sacct shows where each job ran."""
    limits = tmp_path / "partitions.yaml"
    limits.write_text("partitions:\n  high: {max_gpu: 0, max_runtime: 600}\n  debug: {max_gpu: 1, max_runtime: 600}\n")
    raw = yaml.safe_load(TWO_CELLS)
    raw["benchmarks"]["slow"]["train"]["epochs"] = 5
    raw["benchmarks"]["slow"]["resources"]["gpus"] = 1  # a GPU cell (it trains on the CPU here)
    study = tmp_path / "gpu.yaml"
    study.write_text(yaml.safe_dump(raw))
    cmd = smk_cmd(tmp_path, "--prunegen-partition-limits", str(limits), "--config", f"study={study}",
                  f"results_root={tmp_path}/results", workers=1)
    rc, out = run_smk(cmd, tmp_path / "run.log", timeout=600)
    assert rc == 0, out[-3000:]
    jobs = wait_for(lambda: (j := sacct_jobs(tmp_path)) and not any(r["state"] in ("RUNNING", "PENDING") for r in j)
                    and j, 120, "the jobs to end")
    rows = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "now-1days", "-o", "JobID,Partition,Comment,WorkDir,AllocTRES"],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    where = {}
    for line in rows:
        parts = line.split("|")  # a comment may hold '|' (an array's values): it is the middle
        part, comment, workdir, tres = parts[1], "|".join(parts[2:-2]), parts[-2], parts[-1]
        if workdir == str(tmp_path):
            where.setdefault(comment.split(":")[0].split("[")[0], set()).add(part)
            if comment.startswith("prunegen-worker"):
                assert "gres/gpu=1" in tres, tres
    assert where == {"prunegen-worker": {"debug"}, "merge": {"high"}, "figures": {"high"}}, (where, jobs)
