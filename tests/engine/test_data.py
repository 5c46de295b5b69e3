"""Tests of prunegen.engine.data: loaders (from tiny files in torchvision's layout), errors, augmentation."""

import hashlib
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from prunegen.engine.data import DATASET_NAMES, Dataset, DatasetError, augment_batch, load_dataset, to_float

REPO = Path(__file__).resolve().parents[2]
IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# ---------------------------------------------------------------- digits


def test_import_is_cheap_and_digits_needs_neither_torchvision_nor_sklearn():
    code = (
        "import sys, prunegen.engine.data as d\n"
        "assert 'torchvision' not in sys.modules and 'sklearn' not in sys.modules\n"
        "d.load_dataset('digits', 'nowhere')\n"
        "assert 'torchvision' not in sys.modules, 'digits imported torchvision'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_digits_shapes_split_and_stats():
    ds = load_dataset("digits", "nowhere")
    assert ds.name == "digits" and ds.num_classes == 10 and not ds.augment and not ds.flip
    assert ds.train_x.shape == (1437, 1, 8, 8) and ds.test_x.shape == (360, 1, 8, 8)
    assert ds.input_shape == (1, 8, 8)
    assert ds.train_x.dtype == ds.test_x.dtype == torch.uint8
    assert ds.train_y.dtype == ds.test_y.dtype == torch.int64
    assert ds.train_x.is_contiguous() and ds.test_x.is_contiguous()
    assert int(ds.train_x.max()) == 16 and int(ds.train_x.min()) == 0  # the 0..16 scale is kept
    # stratified: the same number of test examples per class, every class in train
    assert ds.test_y.bincount(minlength=10).tolist() == [36] * 10
    assert ds.train_y.bincount(minlength=10).min() >= 130
    # mean/std computed from the training split, in its 0..16 scale
    assert ds.mean[0] == pytest.approx(ds.train_x.double().mean().item(), abs=1e-3)
    assert ds.std[0] == pytest.approx(ds.train_x.double().std().item(), abs=1e-3)


def test_digits_split_is_fixed_and_partitions_sklearn_digits():
    a, b = load_dataset("digits", "x"), load_dataset("digits", "y")
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    # train + test is exactly sklearn's load_digits(), each example once
    from sklearn.datasets import load_digits

    d = load_digits()
    ours = torch.cat([torch.cat([a.train_x, a.test_x]).flatten(1).double(), torch.cat([a.train_y, a.test_y])[:, None].double()], 1)
    ref = torch.from_numpy(np.c_[d.data, d.target]).double()
    assert ours.shape == ref.shape
    assert torch.equal(ours[np.lexsort(ours.numpy().T[::-1])], ref[np.lexsort(ref.numpy().T[::-1])])


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet", "data")
    assert set(DATASET_NAMES) == {"digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn"}


# ---------------------------------------------------------------- tiny files in torchvision's layout


def write_idx(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)  # 0x08: uint8
    path.write_bytes(header + a.astype(np.uint8).tobytes())


def make_mnist_like(root: Path, folder: str, n_train=50, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = np.arange(n) % 10
        write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", x)
        write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", y)
        arrays[prefix] = (x, y)
    return arrays


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def make_cifar(root: Path, monkeypatch, name: str, n=12, seed=0):
    """Tiny pickled CIFAR batches. torchvision verifies every CIFAR file's md5 (which keeps real
    data strictly checked, and the loader relies on it), so the test patches in the md5s of the
    files it wrote; the loader itself is unchanged."""
    import torchvision.datasets as tvd

    rng = np.random.default_rng(seed)
    k = 10 if name == "cifar10" else 100
    if name == "cifar10":
        cls, folder, train_names, test_names = tvd.CIFAR10, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
        meta_name, meta = "batches.meta", {"label_names": [f"c{i}" for i in range(k)]}
    else:
        cls, folder, train_names, test_names = tvd.CIFAR100, "cifar-100-python", ["train"], ["test"]
        meta_name, meta = "meta", {"fine_label_names": [f"c{i}" for i in range(k)], "coarse_label_names": [f"s{i}" for i in range(20)]}
    (root / folder).mkdir(parents=True)
    written = {}
    for fname in train_names + test_names:
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)  # NCHW, as the loader must return it
        y = [int(v) for v in rng.integers(0, k, n)]
        entry = {"data": x.reshape(n, 3072), "batch_label": fname}  # CIFAR rows are CHW-flattened
        entry.update({"labels": y} if name == "cifar10" else {"fine_labels": y, "coarse_labels": [v % 20 for v in y]})
        (root / folder / fname).write_bytes(pickle.dumps(entry))
        written[fname] = (x, y)
    (root / folder / meta_name).write_bytes(pickle.dumps(meta))
    monkeypatch.setattr(cls, "train_list", [[f, md5(root / folder / f)] for f in train_names])
    monkeypatch.setattr(cls, "test_list", [[f, md5(root / folder / f)] for f in test_names])
    monkeypatch.setattr(cls, "meta", {"filename": meta_name, "key": next(iter(meta)), "md5": md5(root / folder / meta_name)})
    train = [written[f] for f in train_names]
    return (
        (np.concatenate([x for x, _ in train]), sum((y for _, y in train), [])),
        written[test_names[0]],
        [root / folder / f for f in train_names + test_names + [meta_name]],
    )


def make_svhn(root: Path, monkeypatch, n_train=15, n_test=7, seed=0):
    sio = pytest.importorskip("scipy.io", reason="writing SVHN .mat files needs scipy")
    import torchvision.datasets as tvd

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    split_list = {k: list(v) for k, v in tvd.SVHN.split_list.items()}
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = np.arange(n) % 10  # SVHN stores digit 0 as label 10
        path = root / f"{split}_32x32.mat"
        sio.savemat(path, {"X": x.transpose(2, 3, 1, 0), "y": np.where(y == 0, 10, y).astype(np.uint8)[:, None]})
        split_list[split][2] = md5(path)  # see make_cifar on checksums
        out[split] = (x, y)
    monkeypatch.setattr(tvd.SVHN, "split_list", split_list)
    return out


def test_mnist_needs_no_torchvision(tmp_path):
    make_mnist_like(tmp_path, "MNIST")
    code = ("import sys, prunegen.engine.data as d\n"
            f"d.load_dataset('mnist', {str(tmp_path)!r})\n"
            "assert 'torchvision' not in sys.modules, 'mnist imported torchvision'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_loads(tmp_path, name, folder):
    arrays = make_mnist_like(tmp_path, folder)
    ds = load_dataset(name, tmp_path)
    assert isinstance(ds, Dataset) and ds.name == name and ds.num_classes == 10 and not ds.augment
    assert ds.train_x.shape == (50, 1, 28, 28) and ds.test_x.shape == (20, 1, 28, 28)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64 and ds.train_x.is_contiguous()
    assert torch.equal(ds.train_x[:, 0], torch.from_numpy(arrays["train"][0]))
    assert torch.equal(ds.test_x[:, 0], torch.from_numpy(arrays["t10k"][0]))
    assert ds.train_y.tolist() == arrays["train"][1].tolist() and ds.test_y.tolist() == arrays["t10k"][1].tolist()
    assert len(ds.mean) == len(ds.std) == 1


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_loads_nchw(tmp_path, monkeypatch, name):
    (train_x, train_y), (test_x, test_y), _ = make_cifar(tmp_path, monkeypatch, name)
    ds = load_dataset(name, tmp_path)
    assert ds.num_classes == (10 if name == "cifar10" else 100)
    assert ds.augment and ds.flip and ds.input_shape == (3, 32, 32)
    assert ds.train_x.shape == (60 if name == "cifar10" else 12, 3, 32, 32) and ds.test_x.shape == (12, 3, 32, 32)
    assert ds.train_x.is_contiguous() and ds.train_x.dtype == torch.uint8
    assert torch.equal(ds.train_x, torch.from_numpy(train_x)) and torch.equal(ds.test_x, torch.from_numpy(test_x))
    assert ds.train_y.tolist() == train_y and ds.test_y.tolist() == test_y
    assert len(ds.mean) == len(ds.std) == 3


def test_cifar_checksums_stay_enforced(tmp_path, monkeypatch):
    """Made-up files do not pass as CIFAR-10 unless their md5s are the known ones."""
    _, _, paths = make_cifar(tmp_path, monkeypatch, "cifar10")
    monkeypatch.undo()  # back to torchvision's real checksums
    with pytest.raises(DatasetError, match="corrupted") as e:
        load_dataset("cifar10", tmp_path)
    assert all(str(p) in str(e.value) for p in paths)


def test_svhn_loads(tmp_path, monkeypatch):
    arrays = make_svhn(tmp_path, monkeypatch)
    ds = load_dataset("svhn", tmp_path)
    assert ds.augment and not ds.flip and ds.num_classes == 10
    assert ds.train_x.shape == (15, 3, 32, 32) and ds.test_x.shape == (7, 3, 32, 32) and ds.train_x.is_contiguous()
    assert torch.equal(ds.train_x, torch.from_numpy(arrays["train"][0]))
    assert ds.train_y.tolist() == arrays["train"][1].tolist()  # label 10 mapped back to 0
    assert ds.test_y.tolist() == arrays["test"][1].tolist()


def _expected_paths(tmp_path, name):
    return {
        "mnist": [tmp_path / "MNIST" / "raw" / f for f in IDX],
        "fashion_mnist": [tmp_path / "FashionMNIST" / "raw" / f for f in IDX],
        "cifar10": [tmp_path / "cifar-10-batches-py" / f for f in ("data_batch_1", "data_batch_5", "test_batch", "batches.meta")],
        "cifar100": [tmp_path / "cifar-100-python" / f for f in ("train", "test", "meta")],
        "svhn": [tmp_path / "train_32x32.mat", tmp_path / "test_32x32.mat"],
    }[name]


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100", "svhn"])
def test_missing_files_name_root_and_paths(tmp_path, name):
    with pytest.raises(DatasetError) as e:
        load_dataset(name, tmp_path)
    msg = str(e.value)
    assert repr(name) in msg and f"data_root {tmp_path}" in msg
    for p in _expected_paths(tmp_path, name):
        assert f"{p}  (missing)" in msg


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("file", IDX)
def test_truncated_mnist_file(tmp_path, file):
    make_mnist_like(tmp_path, "MNIST")
    _truncate(tmp_path / "MNIST" / "raw" / file)
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist", tmp_path)
    assert str(tmp_path / "MNIST" / "raw" / file) in str(e.value) and "(missing)" not in str(e.value)


def test_mismatched_mnist_files(tmp_path):
    """Files torchvision reads happily but that do not belong together."""
    make_mnist_like(tmp_path, "MNIST")
    write_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.zeros(7, dtype=np.uint8))
    with pytest.raises(DatasetError, match="one label each"):
        load_dataset("mnist", tmp_path)
    write_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.full(20, 12, dtype=np.uint8))
    with pytest.raises(DatasetError, match="labels outside 0..9"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_truncated_cifar_file(tmp_path, monkeypatch, name):
    *_, paths = make_cifar(tmp_path, monkeypatch, name)
    _truncate(paths[-2])  # the test batch
    with pytest.raises(DatasetError) as e:
        load_dataset(name, tmp_path)
    assert str(paths[-2]) in str(e.value)


def test_truncated_svhn_file(tmp_path, monkeypatch):
    make_svhn(tmp_path, monkeypatch)
    _truncate(tmp_path / "test_32x32.mat")
    with pytest.raises(DatasetError) as e:
        load_dataset("svhn", tmp_path)
    assert str(tmp_path / "test_32x32.mat") in str(e.value)


def test_download_without_network_gives_same_clear_error(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.cifar as tv_cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(DatasetError, match="URLError") as e:
        load_dataset("cifar10", tmp_path, download=True)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in str(e.value)


# ---------------------------------------------------------------- to_float


def test_to_float_normalises_per_channel():
    x = torch.tensor([[[[10]], [[20]], [[30]]]], dtype=torch.uint8)  # (1, 3, 1, 1)
    y = to_float(x, (10.0, 10.0, 10.0), (1.0, 2.0, 4.0))
    assert y.dtype == torch.float32 and y.flatten().tolist() == [0.0, 5.0, 5.0]
    f = torch.full((2, 1, 3, 3), 5.0)
    assert torch.equal(to_float(f, (5.0,), (2.0,)), torch.zeros(2, 1, 3, 3)) and torch.equal(f, torch.full((2, 1, 3, 3), 5.0))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_to_float_into_a_buffer_gives_the_same_bits_in_any_memory_format(memory_format):
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = (125.3, 123.0, 113.9), (63.0, 62.1, 66.7)  # not exact in binary: rounding shows
    buffer = torch.full((7, 3, 8, 8), float("nan")).contiguous(memory_format=memory_format)
    y = to_float(x, mean, std, out=buffer[:5])  # an epoch's last, shorter batch
    assert y.data_ptr() == buffer.data_ptr() and y.is_contiguous(memory_format=memory_format)
    assert torch.equal(y, to_float(x, mean, std))
    assert buffer[5:].isnan().all()


# ---------------------------------------------------------------- augment_batch


def _ramp(b, c=3, h=32, w=32):
    """Every pixel of every example distinct and > 0, so padding zeros and offsets are recognisable."""
    base = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, 1, h, w) + 10000 * torch.arange(c).view(1, c, 1, 1)
    return base.expand(b, c, h, w).contiguous()


def _recover(out, h, w):
    """(dy, dx, flipped) per example from the centre pixels of channel 0 (always inside the image for pad <= 4)."""
    v = out[:, 0, h // 2, w // 2].long() - 1
    right = out[:, 0, h // 2, w // 2 + 1].long() - 1
    flipped = right < v
    crop_col = torch.where(flipped, w - 1 - w // 2, w // 2)  # where the centre column came from in the crop
    return (v // w - h // 2).tolist(), (v % w - crop_col).tolist(), flipped.tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_augment_identity_without_pad_and_flip(dtype):
    x = torch.randint(0, 256, (8, 3, 16, 16)).to(dtype)
    out = augment_batch(x, torch.Generator().manual_seed(0), pad=0, flip=False)
    assert out.dtype == dtype and torch.equal(out, x)


@pytest.mark.parametrize("flip", [False, True])
def test_augment_matches_per_example_reference(flip):
    b, h, w, pad = 256, 32, 32, 4
    x = _ramp(b)
    out = augment_batch(x, torch.Generator().manual_seed(1), pad=pad, flip=flip)
    assert out.shape == x.shape and out.dtype == x.dtype
    dys, dxs, flips = _recover(out, h, w)
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    for i in range(b):  # reference: crop the padded image at the recovered offset, flip if recovered
        ref = padded[i, :, pad + dys[i] : pad + dys[i] + h, pad + dxs[i] : pad + dxs[i] + w]
        assert torch.equal(out[i], ref.flip(-1) if flips[i] else ref), i
    assert set(dys) == set(range(-pad, pad + 1)) and set(dxs) == set(range(-pad, pad + 1))  # every offset occurs
    assert len(set(zip(dys, dxs))) > 50  # different examples get different crops
    assert (0.3 < sum(flips) / b < 0.7) if flip else not any(flips)


def test_augment_is_deterministic_given_generator():
    x = _ramp(64)
    a = augment_batch(x, torch.Generator().manual_seed(7))
    b = augment_batch(x, torch.Generator().manual_seed(7))
    c = augment_batch(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(7)  # successive batches from one generator differ
    assert not torch.equal(augment_batch(x, g), augment_batch(x, g))


def test_augment_flip_only_is_an_involution():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = augment_batch(x, torch.Generator().manual_seed(3), pad=0, flip=True)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and same.any() and mirrored.any()
    assert torch.equal(torch.where(mirrored.view(-1, 1, 1, 1), out.flip(-1), out), x)  # flipping back restores x


def test_augment_uint8_pads_with_zeros_and_keeps_memory_format():
    x = torch.full((32, 1, 8, 8), 200, dtype=torch.uint8)
    out = augment_batch(x, torch.Generator().manual_seed(0), pad=4, flip=True)
    assert out.dtype == torch.uint8 and out.is_contiguous()
    assert set(out.unique().tolist()) == {0, 200}
    zeros = (out == 0).flatten(1).sum(1)
    assert (zeros > 0).any() and (zeros < 64).all()  # some padding shows, never the whole image
    cl = _ramp(4).to(memory_format=torch.channels_last)
    assert augment_batch(cl, torch.Generator().manual_seed(0)).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augment_on_cuda_matches_reference():
    x = _ramp(128).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    out = augment_batch(x, g)
    assert out.device == x.device and out.shape == x.shape
    dys, dxs, flips = _recover(out.cpu(), 32, 32)
    padded = torch.nn.functional.pad(x, (4,) * 4).cpu()
    for i in range(128):
        ref = padded[i, :, 4 + dys[i] : 36 + dys[i], 4 + dxs[i] : 36 + dxs[i]]
        assert torch.equal(out[i].cpu(), ref.flip(-1) if flips[i] else ref)
    assert torch.equal(out, augment_batch(x, torch.Generator(device="cuda").manual_seed(0)))


# ---------------------------------------------------------------- real data (fetched by .ci/fetch-data.sh)


def _real(folder):
    if not (REPO / "data" / folder / "raw").is_dir():
        reason = f"data/{folder}/raw not found: run .ci/fetch-data.sh to place the real files"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)  # CI must check the real data, never skip it (as tests/test_mnist.py)
        pytest.skip(reason)


def _same_as_torchvision(ds, cls):
    """The loader reads the IDX files itself (without importing torchvision): it must give
    exactly what torchvision's dataset class gives."""
    for train, x, y in ((True, ds.train_x, ds.train_y), (False, ds.test_x, ds.test_y)):
        ref = cls(REPO / "data", train=train)
        assert torch.equal(x, ref.data.unsqueeze(1)) and torch.equal(y, ref.targets)


@pytest.mark.mnist
def test_real_mnist():
    import torchvision.datasets as tvd

    _real("MNIST")
    ds = load_dataset("mnist", REPO / "data")
    _same_as_torchvision(ds, tvd.MNIST)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_y[:5].tolist() == [5, 0, 4, 1, 9]
    assert ds.train_y.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert ds.mean[0] == pytest.approx(ds.train_x.double().mean().item(), abs=0.05)
    assert ds.std[0] == pytest.approx(ds.train_x.double().std().item(), abs=0.05)


@pytest.mark.mnist
def test_real_fashion_mnist():
    import torchvision.datasets as tvd

    _real("FashionMNIST")
    ds = load_dataset("fashion_mnist", REPO / "data")
    _same_as_torchvision(ds, tvd.FashionMNIST)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_y.bincount().tolist() == [6000] * 10 and ds.test_y.bincount().tolist() == [1000] * 10
    assert ds.mean[0] == pytest.approx(ds.train_x.double().mean().item(), abs=0.05)
    assert ds.std[0] == pytest.approx(ds.train_x.double().std().item(), abs=0.05)
