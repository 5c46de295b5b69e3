"""`prunegen status --watch` against the real single-node SLURM (issue 18, "Done when" 3):
a running study's cells are seen pending (with SLURM's reason), running (with the epoch
reached), completed and failed (with the job's log), in the watch's own output captured
while the study runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from prunegen.records import store
from tests.slurm import cluster
from tests.slurm.helpers import finish, smk_cmd, start_smk, wait_for

STUDY = """\
study: watched
device: cpu
benchmarks:
  slow:
    dataset: digits
    model: {name: mlp, hidden: [64, 32]}
    data: {val_size: 180}
    train: {epochs: 1000, batch_size: 64, lr: 0.05, momentum: 0.9, weight_decay: 1.0e-4}
    prune: {fraction: 0.2}
    resources: {gpus: 0, cpus: 1, mem_mb: 1500, runtime_min: 5}
arms: [dense]
levels: 0
noise: [0.0, 0.1]
seeds: [0]
"""


@pytest.mark.slurm
def test_watch_shows_pending_running_completed_and_failed(tmp_path):
    cluster.require(accounting=True)
    study = tmp_path / "study.yaml"
    study.write_text(STUDY)
    root = tmp_path / "results"
    # The noise=0.1 cell fails: a garbled checkpoint in its folder, which run-cell refuses.
    broken = root / "watched" / "cells" / "benchmark=slow/arm=dense/noise=0.1/seed=0/level=0"
    broken.mkdir(parents=True)
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    # A job holding the whole node: the cells pend behind it (reason Resources or Priority).
    blocker = cluster.sbatch(["--exclusive", "-t", "2", "-o", str(tmp_path / "blocker.out")], _script(tmp_path, 12))
    smk = start_smk(smk_cmd(tmp_path, "--retries", "0", "--keep-going", "--config", f"study={study}",
                            f"results_root={root}"), tmp_path / "smk.log")
    try:
        wait_for(lambda: list((tmp_path / ".snakemake" / "submitit").glob("*/jobs.jsonl")), 60,
                 "the executor's job list")
        out_path = tmp_path / "watch.out"
        with open(out_path, "w") as out:
            w = subprocess.run([sys.executable, "-m", "prunegen.cli", "status", "--watch", "--study", str(study),
                                "--results-root", str(root), "--workdir", str(tmp_path), "--interval", "0.5",
                                "--patience", "30"], stdout=out, stderr=subprocess.STDOUT, timeout=240)
        text = out_path.read_text()
        assert w.returncode == 0, text[-3000:]
    finally:
        subprocess.run(["scancel", blocker], check=False)
        rc, log = finish(smk, tmp_path / "smk.log", timeout=120)
    blocks = text.split("prunegen status --watch")[1:]
    assert len(blocks) >= 4, text[-3000:]
    label = "slow dense L0 noise={} seed=0"
    pending = [b for b in blocks if re.search(rf"pending  {label.format('0.0')}: (Resources|Priority)", b)]
    assert pending, text[:3000]
    epochs = [int(m.group(1)) for b in blocks
              for m in re.finditer(rf"running  {label.format('0.0')}: epoch (\d+)/1000 \(SLURM job [\d_]+\)", b)]
    # caught mid-training, epoch from its checkpoint (1,000 digits epochs: about 25 s today; 60 once
    # ran in 2 s, between two refreshes)
    assert any(0 < e < 1000 for e in epochs), text[-3000:]
    last = blocks[-1]
    m = re.search(rf"failed   {label.format('0.1')}: (\w+).*; log (\S+), cell log (\S+) \(SLURM job [\d_]+\)", last)
    assert m and m.group(1) == "FAILED", last
    assert Path(m.group(2)).exists() and "exit code 1" in Path(m.group(2)).read_text()  # the job's stderr
    assert "corrupt checkpoint" in Path(m.group(3)).read_text()  # run-cell's own error
    assert "0 queued, 0 pending, 0 running, 1 completed, 1 failed" in last, last
    assert store.is_complete(root / "watched" / "cells" / "benchmark=slow/arm=dense/noise=0.0/seed=0/level=0",
                               _hash(study, root))
    assert rc != 0 and blocks.index(pending[0]) < len(blocks) - 1


def _script(tmp_path: Path, seconds: int) -> Path:
    s = tmp_path / "blocker.sh"
    s.write_text(f"#!/bin/bash\nsleep {seconds}\n")
    return s


def _hash(study: Path, root: Path) -> str:
    from prunegen.study.load import load_study

    return load_study(study, {"results_root": str(root)}).cell("slow", "dense", 0, 0.0, 0).hash
