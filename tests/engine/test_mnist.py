"""The real MNIST through the project's own loader: a dense LeNet-300-100 cell with the
paper's optimizer (SGD, lr 0.1, batch 128) for two epochs."""

import os

import pyarrow.parquet as pq
import pytest
import yaml

from prunegen.engine.run import run_cell
from prunegen.study.load import from_dict
from tests.helpers import REPO

pytestmark = [pytest.mark.mnist, pytest.mark.slow]
DATA = REPO / "data"


@pytest.fixture
def mnist_root():
    if not (DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        reason = "real MNIST missing under data/: run .ci/fetch-data.sh"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)  # CI must train on the real data, never skip it
        pytest.skip(reason)
    return DATA


def test_dense_lenet_300_100_reaches_95_percent_in_two_epochs(mnist_root, tmp_path):
    study = from_dict(yaml.safe_load(f"""
study: mnist-ci
data_root: {mnist_root}
results_root: {tmp_path}
device: cpu
benchmarks:
  mnist-lenet300:
    dataset: mnist
    model: {{name: mlp, hidden: [300, 100]}}
    data: {{val_size: 5000}}
    train: {{epochs: 2, batch_size: 128, lr: 0.1, momentum: 0.0, weight_decay: 0.0, schedule: {{kind: constant}}}}
arms: [dense]
levels: 0
noise: [0.0]
seeds: [0]
"""))
    out = run_cell(study, "mnist-lenet300", "dense", 0, 0.0, 0)
    summary = pq.read_table(out / "summary.parquet").to_pylist()[0]
    assert summary["train_examples"] == 55000 and summary["prunable_weights"] == 265200
    assert summary["parameters"] == 266610
    assert 1 - summary["test_error"] >= 0.95
    history = pq.read_table(out / "history.parquet").to_pandas()
    assert list(history.epoch) == [1, 2] and (history.lr == 0.1).all()
