"""Image datasets streamed from class folders (issue 28): PNGs the test writes and the 20 real
ImageNet JPEGs foolbox's wheel ships, through the real listing, decode and transform path; the
seeded-stream guarantees of the in-memory path (order, crops and flips from the cell's streams,
the same for any number of DataLoader workers; label noise by example index)."""

import dataclasses
import importlib.util
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from prunegen import cli
from prunegen.engine import folders
from prunegen.engine.data import Dataset, DatasetError, load_dataset
from prunegen.engine.ranks import Ranks
from prunegen.engine.run import run_cell
from prunegen.engine.splits import make_splits
from prunegen.study.load import from_dict, load_study
from tests.helpers import REPO, SMOKE, write_image_folders

PAPER = REPO / "workflow" / "studies" / "paper.yaml"
SHAPES = {"folders": "shapes", "shape": [3, 16, 16], "classes": 3, "mean": [110.0] * 3, "std": [70.0] * 3,
          "augment": True}


def _study(tmp_path, definition=SHAPES, *, results="results", noise=0.25):
    raw = yaml.safe_load(SMOKE.read_text())
    bm = raw["benchmarks"].pop("digits-mlp")
    bm.update(dataset="shapes", data={"val_size": 12}, model={"name": "resnet20", "width": 4})
    bm["train"] |= {"epochs": 2, "batch_size": 16}
    raw |= {"study": "folders", "data_root": str(tmp_path), "results_root": str(tmp_path / results),
            "benchmarks": {"shapes-resnet20": bm}, "datasets": {"shapes": definition},
            "levels": 1, "noise": [noise], "seeds": [0]}
    return from_dict(raw)


@pytest.fixture
def shapes(tmp_path):
    return write_image_folders(tmp_path / "shapes")


def _records(out: Path):
    return (pd.read_parquet(out / "examples.parquet"), pd.read_parquet(out / "history.parquet"),
            torch.load(out / "model.pt", weights_only=True))


def test_a_streamed_cell_is_the_same_for_any_number_of_loader_workers(tmp_path, shapes, monkeypatch):
    """Order, crops and flips come from the cell's seeded streams, not from which worker decodes what:
    the same records bit for bit with the main process decoding (0) and with 2 workers."""
    runs = []
    for workers in ("0", "2"):
        monkeypatch.setenv(folders.WORKERS_ENV, workers)
        study = _study(tmp_path, results=f"results-{workers}")
        runs.append(_records(run_cell(study, "shapes-resnet20", "dense", 0, 0.25, 0, device="cpu")))
    (ex0, hist0, model0), (ex2, hist2, model2) = runs
    pd.testing.assert_frame_equal(ex0, ex2)
    pd.testing.assert_frame_equal(hist0.drop(columns="seconds"), hist2.drop(columns="seconds"))
    assert all(torch.equal(model0[k], model2[k]) for k in model0)
    # per-example records of every split, with the noise drawn by index
    assert ex0.split.value_counts().to_dict() == {"train": 60, "val": 12, "test": 18}
    train = ex0[ex0.split == "train"]
    assert int(train.is_noisy.sum()) == 15  # round(0.25 x 60), other_class: every one changed
    assert (train.true_label == train["index"] // 24).all()  # class folders in order, 24 images each


def test_a_training_example_is_cropped_by_its_epoch_and_index_alone(shapes, tmp_path):
    """An example's crop and flip do not depend on its place in the epoch or on the batch size
    (so not on how a step's global batch is later split by rank), and change with the epoch."""
    study = _study(tmp_path)
    bm = study.benchmarks["shapes-resnet20"]
    ds = load_dataset(bm.dataset, tmp_path, source=bm.source)
    x, index = ds.train_x, torch.arange(len(ds.train_y))

    def epoch(perm, bs, seed):
        got = torch.cat(list(folders.train_batches(x, index, perm, bs, 0, seed, True, True)))
        return got[torch.argsort(perm)]  # back to dataset order

    forward, backward = torch.arange(72), torch.arange(72).flip(0)
    a = epoch(forward, 16, 11)
    assert a.shape == (72, 3, 16, 16) and a.dtype == torch.uint8
    assert torch.equal(a, epoch(backward, 7, 11))
    assert not torch.equal(a, epoch(forward, 16, 12))
    steps = list(folders.StepBatches(backward, 16, first=3))
    assert steps == [backward[48:64].tolist(), backward[64:].tolist()]  # global batches, from step 3 on
    # two data-parallel ranks: each decodes its share of every global batch, with one process's crops
    for rank in (0, 1):
        share = Ranks(rank, 2).shard
        got = torch.cat(list(folders.train_batches(x, index, backward, 16, 0, 11, True, True, shard=share)))
        mine = torch.cat([b[slice(*share(len(b)))] for b in backward.split(16)])  # its examples, in order
        assert len(got) == 36 and torch.equal(got, a[mine])
    plain = torch.cat(list(folders.eval_batches(x, 10)))
    assert not torch.equal(a, plain)  # augmented, not the evaluation transform
    without = torch.cat(list(folders.train_batches(x, index, forward, 16, 0, 11, False, True)))
    assert torch.equal(without, plain)  # without augmentation: the evaluation transform


def test_label_noise_and_the_validation_split_are_the_in_memory_draw(shapes, tmp_path):
    study = _study(tmp_path)
    bm = study.benchmarks["shapes-resnet20"]
    streamed = load_dataset(bm.dataset, tmp_path, source=bm.source)
    zeros = torch.zeros((72, 3, 1, 1), dtype=torch.uint8)
    memory = Dataset("shapes", zeros, streamed.train_y, zeros[:18], streamed.test_y, 3, (0.0,) * 3, (1.0,) * 3, False)
    a, b = (make_splits(d, val_size=12, noise=0.25, noise_mode="any_class", seed=3, augment=False, device="cpu")
            for d in (streamed, memory))
    for part in ("train", "val", "test"):
        sa, sb = getattr(a, part), getattr(b, part)
        assert torch.equal(sa.index, sb.index) and torch.equal(sa.y, sb.y) and torch.equal(sa.true_y, sb.true_y)
    assert list(a.train.x.paths[:2]) == [str(shapes / "train" / "class0" / f"img{i:03d}.png").encode()
                                         for i in a.train.index[:2].tolist()]


def test_without_the_folders_run_cell_names_the_path_and_the_layout(tmp_path, capsys):
    study = load_study(PAPER, overrides={"data_root": str(tmp_path / "data"), "results_root": str(tmp_path / "r")})
    with pytest.raises(DatasetError) as err:
        run_cell(study, "imagenet-resnet50", "dense", 0, 0.0, 0, device="cpu")
    text = str(err.value)
    assert str(tmp_path / "data" / "imagenet") in text
    assert "train/<class>/<image>" in text and "val/<class>/<image>" in text
    assert not list((tmp_path / "r").glob("**/cell.json"))
    # the command: the 8-GPU cell says so once, before it starts any of its 8 ranks
    rc = cli.main(["run-cell", "--study", str(PAPER), "--data-root", str(tmp_path / "data"),
                   "--results-root", str(tmp_path / "r"), "--benchmark", "imagenet-resnet50", "--arm", "dense",
                   "--level", "0", "--noise", "0.0", "--seed", "0"])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("prunegen: error:") == 1 and str(tmp_path / "data" / "imagenet") in err, err
    assert "train/<class>/<image>" in err and not (tmp_path / "r" / "paper" / "logs" / "ranks").exists()


def test_a_folder_whose_classes_differ_from_the_definition_is_refused(shapes, tmp_path):
    study = _study(tmp_path, SHAPES | {"classes": 4})
    bm = study.benchmarks["shapes-resnet20"]
    with pytest.raises(DatasetError, match="3 class folders, the study says classes: 4"):
        load_dataset(bm.dataset, tmp_path, source=bm.source)


# ------------------------------------------------------------- the real ImageNet JPEGs foolbox ships

def _foolbox_imagenet(root: Path) -> Path:
    """ImageNet's layout from foolbox's 20 JPEGs (imagenet_<i>_<class>.jpg): all in train/, every
    other one in val/, each in the folder of its class."""
    spec = importlib.util.find_spec("foolbox")  # its files, never its code
    if spec is None or spec.origin is None:
        raise AssertionError("foolbox is not installed: bash .ci/setup --test installs it (--no-deps)")
    jpegs = sorted((Path(spec.origin).parent / "data").glob("imagenet_*.jpg"))
    assert len(jpegs) == 20
    for i, path in enumerate(jpegs):
        label = int(path.stem.rsplit("_", 1)[1])
        for split in ("train", "val") if i % 2 else ("train",):
            (root / split / f"n{label:04d}").mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / split / f"n{label:04d}" / path.name)
    return root


def test_the_real_imagenet_jpegs_decode_as_openlths_transforms_do(tmp_path):
    import torchvision.transforms as T
    from PIL import Image

    root = _foolbox_imagenet(tmp_path / "imagenet")
    src = dataclasses.replace(load_study(PAPER).benchmarks["imagenet-resnet50"].source, classes=19)
    ds = load_dataset("imagenet", tmp_path, source=src)
    assert (len(ds.train_y), len(ds.test_y), ds.input_shape) == (20, 10, (3, 224, 224))
    first = ds.test_x.paths[0].decode()
    reference = T.Compose([T.Resize(256), T.CenterCrop(224)])(Image.open(first).convert("RGB"))
    decoded = torch.cat(list(folders.eval_batches(ds.test_x, 4)))
    assert decoded.shape == (10, 3, 224, 224)
    assert torch.equal(decoded[0], torch.from_numpy(np.array(reference)).permute(2, 0, 1))
    wide = tmp_path / "wide.jpg"  # not square: the short side is resized, then the centre cropped
    Image.open(first).convert("RGB").crop((0, 0, 224, 150)).save(wide)
    reference = T.Compose([T.Resize(256), T.CenterCrop(224)])(Image.open(wide).convert("RGB"))
    assert torch.equal(ds.test_x.transform.evaluate(str(wide).encode()),
                       torch.from_numpy(np.array(reference)).permute(2, 0, 1))
    crops = torch.cat(list(folders.train_batches(ds.train_x, torch.arange(20), torch.arange(20), 8, 0, 5, True, True)))
    assert crops.shape == (20, 3, 224, 224)
    assert Path(first).parent.name == "n" + first.rsplit("_", 1)[1][:-4].zfill(4)  # labelled by folder
    assert root.is_dir()


def test_the_paper_imagenet_benchmark_trains_a_cell_on_the_real_jpegs(tmp_path, monkeypatch):
    """imagenet-resnet50 as paper.yaml defines it, at width 4, one epoch, on foolbox's JPEGs: a
    ResNet-50 trained from streamed 224x224 crops writes every record."""
    monkeypatch.setenv(folders.WORKERS_ENV, "1")
    _foolbox_imagenet(tmp_path / "imagenet")
    raw = yaml.safe_load(PAPER.read_text())
    raw["datasets"]["imagenet"]["classes"] = 19
    bm = raw["benchmarks"]["imagenet-resnet50"]
    bm["model"]["width"] = 4
    bm["data"]["val_size"] = 4
    bm["train"] |= {"epochs": 1, "batch_size": 8, "eval_batch_size": 8, "lr": 0.05}
    bm["train"]["schedule"]["warmup_epochs"] = 0
    raw |= {"data_root": str(tmp_path), "results_root": str(tmp_path / "results"), "device": "cpu",
            "benchmarks": {"imagenet-resnet50": bm}}
    out = run_cell(from_dict(raw), "imagenet-resnet50", "dense", 0, 0.0, 0)
    ex = pd.read_parquet(out / "examples.parquet")
    assert ex.split.value_counts().to_dict() == {"train": 16, "test": 10, "val": 4}
    assert np.isfinite(ex.loss).all()
    assert pd.read_parquet(out / "summary.parquet").model.tolist() == ["imagenet_resnet50"]


def test_a_process_that_keeps_datasets_loaded_loads_a_changed_folder_again(tmp_path, shapes):
    """A warm worker keeps its datasets between cells (data.keep_loaded) while their files are
    unchanged: for image folders, while their split and class folders keep their times."""
    from prunegen.engine import data

    for here, dirs, _ in os.walk(shapes):  # an hour old: a change now shows in the times
        for d in dirs:
            os.utime(Path(here) / d, (time.time() - 3600,) * 2)
    bm = _study(tmp_path).benchmarks["shapes-resnet20"]
    data.keep_loaded(2)
    try:
        first = load_dataset(bm.dataset, tmp_path, source=bm.source)
        assert load_dataset(bm.dataset, tmp_path, source=bm.source) is first  # kept
        shutil.copy(shapes / "train/class1/img000.png", shapes / "train/class1/img999.png")
        again = load_dataset(bm.dataset, tmp_path, source=bm.source)
        assert again is not first and len(again.train_y) == len(first.train_y) + 1
    finally:
        data.keep_loaded(0)
