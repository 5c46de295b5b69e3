"""A dataset staged once per node (issue 30 item 4, prunegen.cluster.stage): the real MNIST
files copied to a node-local folder once and found there by every later cell, loading to
the same tensors; and `prunegen run-cell` with PRUNEGEN_STAGE_DIR reading a researcher's npz
from the stage, with the records of a cell that read it from data_root."""

import os

import pandas as pd
import pytest
import torch
import yaml

from prunegen import cli
from prunegen.cluster import stage
from prunegen.engine.data import dataset_files, load_dataset
from tests.helpers import REPO
from tests.workflow.test_own_datasets import CHW, _study, _write_npz

DATA = REPO / "data"


@pytest.mark.mnist
def test_mnist_is_copied_once_and_loads_the_same(tmp_path):
    files = dataset_files("mnist", DATA)
    assert len(files) == 4, "the real MNIST under data/: bash .ci/setup --test"
    root = stage.stage(files, DATA, tmp_path / "node")
    staged = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert [p.relative_to(root) for p in staged] == sorted(f.relative_to(DATA.absolute()) for f in files)
    assert all(a.read_bytes() == (root / a.relative_to(DATA.absolute())).read_bytes() for a in files)
    times = [p.stat().st_mtime_ns for p in staged]
    inodes = [p.stat().st_ino for p in staged]
    assert stage.stage(files, DATA, tmp_path / "node") == root  # the next cell on the node: no copy
    assert [p.stat().st_ino for p in staged] == inodes and [p.stat().st_mtime_ns for p in staged] == times
    a, b = load_dataset("mnist", DATA), load_dataset("mnist", root)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert dataset_files("digits", DATA) == []  # nothing to stage


def test_run_cell_reads_the_staged_copy_and_records_the_same(tmp_path, monkeypatch):
    _write_npz(tmp_path / "lab.npz")
    raw = _study(tmp_path, {"npz": "lab.npz", "shape": list(CHW), "classes": 4}, levels=0, arms=["dense"])
    args = ["--benchmark", "digits-mlp", "--arm", "dense", "--level", "0", "--noise", "0.0", "--seed", "0"]
    records = {}
    for name, where in (("shared", None), ("staged", tmp_path / "node")):
        raw |= {"results_root": str(tmp_path / name)}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        if where is None:
            monkeypatch.delenv(stage.ENV, raising=False)
        else:
            monkeypatch.setenv(stage.ENV, str(where))
        assert cli.main(["run-cell", "--study", str(path), *args]) == 0
        cell = next((tmp_path / name).rglob("examples.parquet"))
        records[name] = pd.read_parquet(cell)
    copies = list((tmp_path / "node" / "prunegen-data").glob("*/lab.npz"))
    assert len(copies) == 1 and copies[0].read_bytes() == (tmp_path / "lab.npz").read_bytes()
    os.utime(copies[0], ns=(0, 0))  # a stale copy (another file by that name) is copied again
    stage.stage([tmp_path / "lab.npz"], tmp_path, tmp_path / "node")
    assert copies[0].stat().st_mtime_ns == (tmp_path / "lab.npz").stat().st_mtime_ns
    pd.testing.assert_frame_equal(records["shared"], records["staged"])
