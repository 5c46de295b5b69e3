"""Issue 28, 4b: a data-parallel cell of 2 gloo ranks on this CPU against the same cell in
one process with the same global batch, through `prunegen run-cell` (the 2 ranks started by
submitit's LocalExecutor, prunegen.cluster.ranks) and through two ranks started here, each
checking after every step that its masked weights and gradients are exactly zero.

Tolerance (docs/design.md, "Data-parallel cells"): not bit for bit, since each rank sums its
share's per-example gradients and the all-reduce adds the shares, another order of fp32
additions than one process's single sum; a few ulps per step. After these 2-epoch cells the
largest difference is ~1e-6 in a per-example loss; TOL is 10x that and 10x below what a wrong
loss scale (each rank's mean instead of the global batch's) gives here.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from prunegen.study.load import load_study
from tests.helpers import REPO, write_image_folders

TOL = 2e-5
TRAIN = 1797 - 360 - 180  # digits' training examples less the validation split
BATCH = 100  # 13 steps an epoch; the last global batch, 57 examples, splits 29 + 28

STUDY = f"""\
study: dp
data_root: {REPO / "data"}
device: cpu
benchmarks:
  digits-mlp:
    dataset: digits
    model: {{name: mlp, hidden: [64, 32]}}
    data: {{val_size: 180}}
    train: {{epochs: 2, batch_size: {BATCH}, lr: 0.05, momentum: 0.9, weight_decay: 1.0e-4}}
    prune: {{fraction: 0.2}}
    resources: {{gpus: 0, cpus: 1, mem_mb: 1000, runtime_min: 5, tasks: TASKS}}
arms: [dense, imp]
levels: 1
noise: [0.2]
seeds: [0]
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def cell_argv(study: Path, arm: str, level: int) -> list[str]:
    return ["run-cell", "--study", str(study), "--benchmark", "digits-mlp", "--arm", arm,
            "--level", str(level), "--noise", "0.2", "--seed", "0"]


def run_cli(argv: list[str]) -> None:
    p = subprocess.run([sys.executable, "-m", "prunegen.cli", *argv], check=False, env=ENV, cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(argv: list[str], out: Path, name: str, world: int = 2, rank_argv: list[str] | None = None) -> list[dict]:
    """`world` processes of `argv` (rank 0) and `rank_argv` (the others; `argv` when None) as the
    ranks of one env:// group; each writes OUT/<name><rank>.json, returned in rank order."""
    port = str(free_port())
    procs = []
    for rank in range(world):
        env = {**ENV, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen(argv if rank == 0 or rank_argv is None else rank_argv, env=env, cwd=REPO,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    return [json.loads((out / f"{name}{r}.json").read_text()) for r in range(world)]


def run_probed_ranks(argv: list[str], out: Path, world: int = 2) -> list[dict]:
    """`world` ranks of a cell started here (env://), each watched by tests/engine/rank_probe.py."""
    probe = [sys.executable, str(REPO / "tests" / "engine" / "rank_probe.py"), str(out)]
    return run_ranks([*probe, *argv], out, "rank", world, [*probe, "rank"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The dense level 0 and imp level 1 cells, in one process and on 2 ranks."""
    tmp = tmp_path_factory.mktemp("ranks")
    studies = {}
    for tasks in (1, 2):
        path = tmp / f"tasks{tasks}.yaml"
        path.write_text(STUDY.replace("TASKS", str(tasks)) + f"results_root: {tmp / f'results{tasks}'}\n")
        studies[tasks] = load_study(path)
        run_cli(cell_argv(path, "dense", 0))  # 2 tasks: run-cell starts the 2 ranks itself
    probes = run_probed_ranks(cell_argv(tmp / "tasks2.yaml", "imp", 1), tmp)
    run_cli(cell_argv(tmp / "tasks1.yaml", "imp", 1))
    return studies, probes


def records(study, arm: str, level: int):
    d = study.cell("digits-mlp", arm, level, 0.2, 0).dir
    return (pd.read_parquet(d / "examples.parquet"), pd.read_parquet(d / "history.parquet"),
            torch.load(d / "model.pt", weights_only=True), json.loads((d / "cell.json").read_text()))


@pytest.mark.parametrize("arm,level", [("dense", 0), ("imp", 1)])
def test_two_ranks_give_the_one_process_results_within_the_tolerance(runs, arm, level):
    studies, _ = runs
    ex1, hist1, model1, meta1 = records(studies[1], arm, level)
    ex2, hist2, model2, meta2 = records(studies[2], arm, level)
    assert meta2["ranks"] == 2 and "ranks" not in meta1
    assert meta1["cell_hash"] != meta2["cell_hash"]  # the world size is part of a cell's identity
    assert (ex1[["split", "index", "observed_label"]] == ex2[["split", "index", "observed_label"]]).all().all()
    diff = (ex1["loss"] - ex2["loss"]).abs().max()
    assert 0 < diff < TOL, diff  # not bit for bit (another order of sums), but within it
    assert (ex1["predicted"] == ex2["predicted"]).all()
    assert max(float((model1[k] - model2[k]).abs().max()) for k in model1) < TOL
    cols = ["train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"]
    assert len(hist1) == len(hist2)
    assert (hist1[cols] - hist2[cols]).abs().max().max() < TOL


def test_masked_weights_are_exactly_zero_after_every_step_on_every_rank(runs):
    _, probes = runs
    steps = 2 * math.ceil(TRAIN / BATCH)
    for rank, seen in enumerate(probes):
        assert seen["rc"] == 0
        assert seen["steps"] == steps, (rank, seen)  # every step of the cell was looked at
        assert seen["masked"] > 0  # imp level 1 masks weights
        assert seen["masked_weight_max"] == 0.0 and seen["masked_grad_max"] == 0.0, (rank, seen)


def test_one_process_hash_is_unchanged_by_the_new_resources(runs):
    """tasks: 1 (and nodes: 1) leave a cell's hash as it was before they existed."""
    studies, _ = runs
    cell = studies[1].cell("digits-mlp", "dense", 0, 0.2, 0)
    assert "ranks" not in cell.hparams() and cell.benchmark.resources.world == 1


def test_sharded_evaluation_gives_rank_0s_numbers_bit_for_bit(tmp_path):
    """Every rank evaluates every other batch of one process's batches, with rank 0's BatchNorm
    statistics (sent first: after a step each replica holds its own share's), and rank 0
    gathers them in order: its per-example losses and predictions are the ones it computes
    alone, bit for bit, for in-memory and streamed splits, an odd number of batches included."""
    shapes = write_image_folders(tmp_path / "shapes", train=17, val=5)
    conv = {"name": "resnet20", "width": 4}
    study = {
        "study": "sharded", "data_root": str(tmp_path), "results_root": str(tmp_path / "results"), "device": "cpu",
        "datasets": {"shapes": {"folders": shapes.name, "shape": [3, 16, 16], "classes": 3,
                                "mean": [110.0] * 3, "std": [70.0] * 3}},
        "benchmarks": {
            "digits-resnet": {"dataset": "digits", "model": conv, "data": {"val_size": 180},
                              "train": {"epochs": 1, "batch_size": 64, "eval_batch_size": 64}},
            "shapes-resnet": {"dataset": "shapes", "model": conv, "data": {"val_size": 10},
                              "train": {"epochs": 1, "batch_size": 8, "eval_batch_size": 7}}},
        "arms": ["dense"], "levels": 0, "noise": [0.0], "seeds": [0]}
    path = tmp_path / "sharded.yaml"
    path.write_text(yaml.safe_dump(study))
    seen = run_ranks([sys.executable, str(REPO / "tests" / "engine" / "eval_probe.py"), str(tmp_path), str(path)],
                     tmp_path, "eval")
    for name in study["benchmarks"]:
        main, other = seen[0][name], seen[1][name]
        assert main["buffers_differed"], name  # else the test could not see a missing broadcast
        for split in ("train", "val", "test"):
            assert main[split]["equal"], (name, split, main[split])
            assert other[split]["got"], (name, split)  # only rank 0 gets the numbers
        assert any(main[s]["batches"] % 2 for s in ("train", "val", "test")), name  # uneven shares
