"""Issue 28, 4c: a data-parallel cell of 2 tasks (2 gloo ranks, one CPU each) through
profiles/slurm on the test cluster: one SLURM job of 2 tasks (sacct), and a run that is
sent USR2 mid-training (SLURM's time-limit warning: submitit checkpoints and requeues the
job) resumes from rank 0's checkpoint and ends with the records of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.slurm import cluster
from tests.slurm.helpers import finish, job_of, run_smk, sacct_jobs, smk_cmd, start_smk, submitit_folder, wait_for

slurm_mark = pytest.mark.slurm

EPOCHS = 300  # ~12 s on 2 ranks of one CPU each: long enough to be caught mid-training
STUDY = f"""\
study: dp
device: cpu
benchmarks:
  slow:
    dataset: digits
    model: {{name: mlp, hidden: [64, 32]}}
    data: {{val_size: 180}}
    train: {{epochs: {EPOCHS}, batch_size: 100, lr: 0.05, momentum: 0.9, weight_decay: 1.0e-4}}
    prune: {{fraction: 0.2}}
    resources: {{gpus: 0, cpus: 1, mem_mb: 2000, runtime_min: 10, tasks: 2}}
arms: [dense]
levels: 0
noise: [0.0]
seeds: [0]
"""
CELL = "cells/benchmark=slow/arm=dense/noise=0.0/seed=0/level=0"


@pytest.fixture(scope="module")
def slurm_up():
    return cluster.require(accounting=True)


def command(workdir: Path) -> list[str]:
    study = workdir / "dp.yaml"
    study.write_text(STUDY)
    target = f"{workdir}/results/dp/{CELL}/cell.json"
    return smk_cmd(workdir, target, "--config", f"study={study}", f"results_root={workdir}/results")


def records(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    d = root / "results" / "dp" / CELL
    return (pd.read_parquet(d / "examples.parquet"), pd.read_parquet(d / "history.parquet").drop(columns="seconds"),
            torch.load(d / "model.pt", weights_only=True), json.loads((d / "cell.json").read_text()))


@slurm_mark
@pytest.mark.slow
def test_a_two_task_cell_requeued_mid_run_ends_as_an_uninterrupted_one(slurm_up, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir()
    cut.mkdir()
    rc, out = run_smk(command(whole), whole / "smk.log", timeout=400)
    assert rc == 0, out[-5000:]
    jobs = sacct_jobs(whole)
    cells = {j: v for j, v in jobs.items() if v["rule"] == "cell"}
    assert len(cells) == 1 and next(iter(cells.values()))["cpus"] == "2", jobs  # one job, 2 tasks of 1 CPU

    log = cut / "smk.log"
    p = start_smk(command(cut), log)
    try:
        checkpoint = cut / "results" / "dp" / CELL / "checkpoint.pt"

        def training() -> bool:
            if p.poll() is not None:
                pytest.fail(f"snakemake ended early:\n{log.read_text()[-4000:]}")
            return checkpoint.exists()
        wait_for(training, 300, "the cell's first checkpoint", poll=0.1)
        job = job_of(submitit_folder(cut), "rule cell")  # its log names it (sacct may lag)
        assert job, "no cell job in the submitit folder"
        cluster.run(["scancel", "--signal=USR2", job])
        rc, out = finish(p, log, timeout=400)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 0, out[-5000:]
    assert "Trying to restart job" not in out  # requeued by SLURM, not retried by Snakemake
    ex1, hist1, model1, meta1 = records(whole)
    ex2, hist2, model2, meta2 = records(cut)
    assert meta1["ranks"] == meta2["ranks"] == 2
    assert meta1["resumed_from"] is None
    assert meta2["resumed_from"] is not None and meta2["resumed_from"]["epoch"] < EPOCHS, meta2["resumed_from"]
    pd.testing.assert_frame_equal(ex1, ex2)  # bit for bit: gloo's sums on CPU are deterministic
    pd.testing.assert_frame_equal(hist1, hist2)
    assert all(torch.equal(model1[k], model2[k]) for k in model1)
    logs = "".join(f.read_text(errors="replace") for f in submitit_folder(cut).glob("*_log.*"))
    assert "rank 1 of 2" in logs and "requeueing" in logs, logs[-3000:]
