"""Datasets of the researcher's own (issue 29): an `.npz` of arrays the test writes, run
through Snakemake with every built-in arm, and a torchvision dataset class by name; and what
the definition or the file gets wrong, refused when the study loads, naming the field."""

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from prunegen.engine.data import DatasetError, load_dataset
from prunegen.engine.run import run_cell
from prunegen.study import datasets
from prunegen.study.grid import StudyError
from prunegen.study.load import from_dict
from tests.helpers import REPO, SMOKE, snakemake

CHW = (1, 8, 8)


def _write_npz(path, n_train=300, n_test=60, layout="nhw", test=True, seed=0):
    """Learnable 8x8 images of 4 classes (a bright quadrant per class, plus noise), uint8."""
    rng = np.random.default_rng(seed)

    def images(n):
        y = rng.integers(0, 4, n)
        x = rng.integers(0, 60, (n, 8, 8))
        for c in range(4):
            r, q = divmod(c, 2)
            x[y == c, 4 * r:4 * r + 4, 4 * q:4 * q + 4] += 180
        x = x.astype(np.uint8)
        return {"nhw": x, "nhwc": x[..., None], "nchw": x[:, None]}[layout], y.astype(np.int64)

    arrays = dict(zip(("x_train", "y_train"), images(n_train)))
    if test:
        arrays |= dict(zip(("x_test", "y_test"), images(n_test)))
    np.savez(path, **arrays)
    return path


def _study(tmp_path, definition: dict, *, val_size=50, arms=None, levels=2, name="own"):
    raw = yaml.safe_load(SMOKE.read_text())
    bm = raw["benchmarks"]["digits-mlp"]
    bm["dataset"] = "lab"
    bm["data"] = {"val_size": val_size}
    bm["model"] = {"name": "mlp", "hidden": [32]}
    bm["train"]["epochs"] = 2
    raw |= {"study": name, "data_root": str(tmp_path), "results_root": str(tmp_path / "results"),
            "datasets": {"lab": definition}, "levels": levels, "noise": [0.0], "seeds": [0]}
    if arms is not None:
        raw["arms"] = arms
    return raw


@pytest.mark.workflow
@pytest.mark.slow
def test_a_study_on_an_npz_runs_every_builtin_arm_through_snakemake(tmp_path):
    _write_npz(tmp_path / "lab.npz", layout="nhwc")
    raw = _study(tmp_path, {"npz": "lab.npz", "shape": list(CHW), "classes": 4},
                 arms=["dense", "imp", "extended", "downscaled", "downscaled_extended", "random"])
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(raw))
    snakemake(tmp_path, path)
    root = tmp_path / "results" / "own"
    summary = pd.read_parquet(root / "tables" / "summary.parquet")
    # every arm at every level it has, one cell each (dense is level 0)
    got = {arm: sorted(int(v) for v in g["level"]) for arm, g in summary.groupby("arm", observed=True)}
    assert got == {"dense": [0], **{a: [1, 2] for a in ("imp", "extended", "downscaled", "downscaled_extended", "random")}}
    assert set(summary.dataset) == {"lab"}
    assert (summary.test_error < 0.5).all()  # it learned the quadrants (chance: 0.75)
    cell = next(root.glob("cells/**/arm=imp/**/level=2/cell.json"))
    meta = json.loads(cell.read_text())
    assert meta["hparams"]["dataset"] == {"name": "lab", "npz": "lab.npz", "shape": list(CHW), "classes": 4,
                                          "augment": False, "flip": True}  # the definition, in the hash
    assert meta["data"]["npz_sha256"] == hashlib.sha256((tmp_path / "lab.npz").read_bytes()).hexdigest()
    ex = pq.read_table(cell.parent / "examples.parquet").to_pandas()
    assert ex.split.value_counts().to_dict() == {"train": 250, "test": 60, "val": 50}  # per example, every split


def test_the_definition_enters_the_hash(tmp_path):
    _write_npz(tmp_path / "lab.npz")
    base = {"npz": "lab.npz", "shape": list(CHW), "classes": 4}
    a = from_dict(_study(tmp_path, base)).cell("digits-mlp", "dense", 0, 0.0, 0).hash
    b = from_dict(_study(tmp_path, base | {"mean": [50.0], "std": [60.0]})).cell("digits-mlp", "dense", 0, 0.0, 0).hash
    assert a != b


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw"])
def test_npz_images_in_any_of_three_layouts_load_as_nchw_with_computed_normalisation(tmp_path, layout):
    _write_npz(tmp_path / "lab.npz", layout=layout)
    study = from_dict(_study(tmp_path, {"npz": "lab.npz", "shape": list(CHW), "classes": 4}))
    bm = study.benchmarks["digits-mlp"]
    ds = load_dataset(bm.dataset, tmp_path, source=bm.source)
    z = np.load(tmp_path / "lab.npz")
    assert torch.equal(ds.train_x, torch.from_numpy(z["x_train"].reshape(300, 1, 8, 8)))
    assert ds.mean == (round(float(z["x_train"].astype(np.float64).mean()), 4),)
    assert bm.sizes == (300, 60)


def test_an_npz_without_a_test_split_holds_one_out_by_a_fixed_draw(tmp_path):
    _write_npz(tmp_path / "lab.npz", test=False)
    definition = {"npz": "lab.npz", "shape": list(CHW), "classes": 4, "test_size": 40}
    bm = from_dict(_study(tmp_path, definition)).benchmarks["digits-mlp"]
    assert bm.sizes == (260, 40)
    one, two = (load_dataset(bm.dataset, tmp_path, source=bm.source) for _ in range(2))
    assert len(one.test_y) == 40 and len(one.train_y) == 260 and torch.equal(one.test_x, two.test_x)
    rows = {tuple(r) for r in one.train_x.flatten(1).tolist()}
    assert not any(tuple(r) in rows for r in one.test_x.flatten(1).tolist())  # disjoint


@pytest.mark.parametrize("change,field", [
    (lambda d, p: d | {"shape": [3, 8, 8]}, "datasets.lab.shape"),
    (lambda d, p: d | {"npz": "missing-arrays.npz"}, "datasets.lab.npz"),
    (lambda d, p: d | {"test_size": 10}, "datasets.lab.test_size"),
    (lambda d, p: d | {"mean": [1.0, 2.0]}, "datasets.lab.mean"),
])
def test_a_definition_that_contradicts_its_file_is_refused_naming_the_field(tmp_path, change, field):
    _write_npz(tmp_path / "lab.npz")
    np.savez(tmp_path / "missing-arrays.npz", images=np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(StudyError, match=rf"study: {field}"):
        from_dict(_study(tmp_path, change({"npz": "lab.npz", "shape": list(CHW), "classes": 4}, tmp_path)))


def test_sizes_from_the_npz_header_refuse_a_validation_split_too_large(tmp_path):
    _write_npz(tmp_path / "lab.npz")
    with pytest.raises(StudyError, match=r"benchmarks.digits-mlp.data.val_size: 300 leaves no training examples: "
                                         r"lab has 300"):
        from_dict(_study(tmp_path, {"npz": "lab.npz", "shape": list(CHW), "classes": 4}, val_size=300))


def test_an_unknown_dataset_or_a_missing_val_size_is_refused_naming_it(tmp_path):
    raw = _study(tmp_path, {"npz": "lab.npz", "shape": list(CHW), "classes": 4})
    raw["benchmarks"]["digits-mlp"]["dataset"] = "labb"
    with pytest.raises(StudyError, match=r"benchmarks.digits-mlp.dataset: 'labb' is neither built in .* \(lab\)"):
        from_dict(raw)
    raw = _study(tmp_path, {"npz": "lab.npz", "shape": list(CHW), "classes": 4})
    del raw["benchmarks"]["digits-mlp"]["data"]["val_size"]
    with pytest.raises(StudyError, match=r"benchmarks.digits-mlp.data.val_size: required for dataset 'lab'"):
        from_dict(raw)


def test_labels_outside_the_classes_fail_the_cell_naming_the_dataset(tmp_path):
    _write_npz(tmp_path / "lab.npz")
    bm = from_dict(_study(tmp_path, {"npz": "lab.npz", "shape": list(CHW), "classes": 3})).benchmarks["digits-mlp"]
    with pytest.raises(DatasetError, match=r"dataset 'lab': train labels outside 0..2 \(classes: 3\)"):
        load_dataset(bm.dataset, tmp_path, source=bm.source)


def test_npz_headers_are_read_without_numpy_as_numpy_writes_them(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((5, 2, 3), np.uint8), y=np.arange(5))
    assert datasets.npz_arrays(tmp_path / "a.npz") == {"x": ("|u1", (5, 2, 3)), "y": ("<i8", (5,))}


@pytest.mark.mnist
def test_a_torchvision_class_by_name_gives_what_the_builtin_loader_gives(tmp_path):
    data = REPO / "data"
    if not (data / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("real MNIST missing under data/")  # CI must read the real data, never skip it
        pytest.skip("real MNIST missing under data/: run .ci/fetch-data.sh")
    raw = _study(tmp_path, {"torchvision": "MNIST", "root": str(data), "shape": [1, 28, 28], "classes": 10},
                 val_size=5000)
    bm = from_dict(raw).benchmarks["digits-mlp"]
    assert bm.sizes is None  # unknown without reading the data
    own, builtin = load_dataset(bm.dataset, tmp_path, source=bm.source), load_dataset("mnist", data)
    for f in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(own, f), getattr(builtin, f)), f
    assert own.mean == pytest.approx(builtin.mean, abs=0.01) and own.std == pytest.approx(builtin.std, abs=0.01)
    with pytest.raises(DatasetError, match="torchvision.datasets has no dataset class 'MNISTT'"):
        load_dataset("lab", tmp_path, source=datasets.DatasetSource("lab", None, "MNISTT", None, (1, 28, 28), 10))

    raw["benchmarks"]["digits-mlp"]["train"]["epochs"] = 1  # a study on it: one dense cell
    raw["arms"] = ["dense"]
    cell = run_cell(from_dict(raw), "digits-mlp", "dense", 0, 0.0, 0)
    summary = pq.read_table(cell / "summary.parquet").to_pandas().iloc[0]
    assert summary.dataset == "lab" and summary.test_error < 0.1
