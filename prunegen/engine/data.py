"""Datasets as in-memory uint8 tensors, normalisation, and batched augmentation.

Every dataset is loaded whole into four CPU tensors (images uint8 NCHW, labels
int64); the training loop moves them to its device once and normalises and
augments per batch there (DESIGN.md section 5), so there is no DataLoader and no
PIL. ``digits`` ships with scikit-learn and needs no files; the others are read
through torchvision's dataset classes from ``data_root`` in torchvision's on-disk
layout (see ``_FILES``), except MNIST and Fashion-MNIST, whose IDX files are read
directly. torchvision and scikit-learn are imported lazily: a digits or MNIST cell
must not pay for importing torchvision.
"""

from __future__ import annotations

import importlib.util
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..study.datasets import image_layout

DATASET_NAMES = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn")

_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# Files torchvision reads, relative to data_root (used in error messages).
_FILES = {
    "mnist": tuple(f"MNIST/raw/{f}" for f in _IDX),
    "fashion_mnist": tuple(f"FashionMNIST/raw/{f}" for f in _IDX),
    "cifar10": tuple(
        f"cifar-10-batches-py/{f}"
        for f in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta")
    ),
    "cifar100": ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"),
    "svhn": ("train_32x32.mat", "test_32x32.mat"),
}

# (num_classes, (C, H, W), mean, std, augment). mean/std are the standard published
# constants in uint8 pixel scale (x 255 of the usual [0, 1] values), fixed so that a
# partial or custom copy of a dataset is normalised the same way as the real one;
# tests check the MNIST/Fashion-MNIST ones against the real training sets. digits has
# no standard constants: they are computed from its fixed training split.
SPECS = {
    "mnist": (10, (1, 28, 28), (33.32,), (78.57,), False),  # 0.1307, 0.3081
    "fashion_mnist": (10, (1, 28, 28), (72.94,), (90.02,), False),  # 0.2860, 0.3530
    "cifar10": (10, (3, 32, 32), (125.3, 123.0, 113.9), (63.0, 62.1, 66.7), True),
    "cifar100": (100, (3, 32, 32), (129.3, 124.1, 112.4), (68.2, 65.4, 70.4), True),
    "svhn": (10, (3, 32, 32), (111.6, 113.2, 120.6), (50.5, 51.3, 50.2), True),
}

DIGITS_TEST_PER_CLASS = 36  # 360 test examples, the same for every run and seed
DIGITS_SPLIT_SEED = 0  # fixed on purpose: not the replicate seed


class DatasetError(Exception):
    """A dataset is unknown, missing or unreadable; the message says what to put where."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors with == is not a bool
class Dataset:
    name: str
    train_x: torch.Tensor  # uint8, (N, C, H, W), contiguous, CPU; or folders.FolderImages (streamed)
    train_y: torch.Tensor  # int64, (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]  # per channel, in the pixel scale of train_x
    std: tuple[float, ...]
    augment: bool  # random crop (pad 4) during training; + horizontal flip if `flip`
    mirror: bool | None = None  # whether images may be flipped (None: all but SVHN's)

    def __post_init__(self):
        for x, y in ((self.train_x, self.train_y), (self.test_x, self.test_y)):
            if not isinstance(x, torch.Tensor):  # files decoded as they stream (engine/folders.py)
                continue
            if x.dtype != torch.uint8 or x.ndim != 4 or not x.is_contiguous():
                raise ValueError(f"{self.name}: images must be contiguous uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.shape != (len(x),):
                raise ValueError(f"{self.name}: labels must be int64 ({len(x)},), got {y.dtype} {tuple(y.shape)}")
        if not (len(self.mean) == len(self.std) == self.train_x.shape[1]):
            raise ValueError(f"{self.name}: mean/std need one value per channel")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    @property
    def flip(self) -> bool:
        """Whether augmentation flips horizontally (not for SVHN: digits are not mirror-symmetric)."""
        return self.augment and self.mirrorable

    @property
    def mirrorable(self) -> bool:
        """Whether a flipped image is still an example of its class (SVHN's digits are not)."""
        return self.name != "svhn" if self.mirror is None else self.mirror


# Datasets a warm process (prunegen.cluster.worker) keeps loaded from cell to cell: off
# unless the process asks (keep_loaded), since only a process that runs many cells gains.
_kept: dict[tuple, Dataset] = {}
_keep = 0


def keep_loaded(n: int) -> None:
    """Keep the last `n` datasets loaded in this process (0: none). A kept dataset is
    returned again only while its files have the same size and modification time."""
    global _keep
    _keep = int(n)
    while len(_kept) > _keep:
        _kept.pop(next(iter(_kept)))


def _files(name: str, root: Path, source) -> list[Path]:
    """The files a dataset is read from (there or not): its npz, a built-in's own files; none
    for digits, a torchvision class's or image folders."""
    if source is not None:
        return [source.npz_path(root)] if source.npz is not None else []
    return [root / f for f in _FILES.get(name, ())]


def _stamp(name: str, root: Path, source) -> tuple:
    if source is not None and source.folders is not None:  # image folders: the times of their folders
        from . import folder_index, folders  # (folders: torchvision's listing, only for these datasets)

        return folder_index.stamp(folders.root_of(source, root))
    return tuple((str(f), st.st_size, st.st_mtime_ns) for f in _files(name, root, source)
                 if (st := _stat(f)) is not None)


def check_present(name: str, data_root: str | Path, source=None) -> None:
    """Raise the DatasetError loading would, where a dataset's files or folders are plainly not
    there: cheap, for a data-parallel cell before it starts its ranks (one clear error, not N)."""
    root = Path(data_root).expanduser().absolute()
    if source is not None and source.folders is not None:
        from . import folders  # torchvision's folder listing, only for these datasets

        try:
            folders.check_present(source, root)
        except folders.LayoutError as e:
            raise DatasetError(str(e)) from None
    elif source is None and name in _FILES:
        missing = [f for f in _FILES[name] if not (root / f).is_file()]
        if missing:
            raise _error(name, root, f"missing {', '.join(missing)}", False)


def dataset_files(name: str, data_root: str | Path, source=None) -> list[Path]:
    """The files under `data_root` a dataset is read from (those there): none for digits and
    image folders (prunegen.cluster.stage copies these to node-local storage)."""
    root = Path(data_root).expanduser().absolute()
    return [f for f in _files(name, root, source) if f.is_file() and f.is_relative_to(root)]


def _stat(path: Path):
    try:
        return path.stat()
    except OSError:
        return None


def load_dataset(name: str, data_root: str | Path, download: bool = False, source=None) -> Dataset:
    """Load a dataset whole. Raises DatasetError naming the expected files if they are missing or corrupt.
    `source`: a dataset of the researcher's own (a prunegen.study.datasets.DatasetSource)."""
    if not _keep:
        return _load(name, data_root, download, source)
    root = Path(data_root).expanduser().absolute()
    key = (name, str(root), repr(source), _stamp(name, root, source))
    if key in _kept:
        _kept[key] = _kept.pop(key)  # most recently used last
        return _kept[key]
    dataset = _load(name, data_root, download, source)
    _kept[key] = dataset
    keep_loaded(_keep)
    return dataset


def _load(name: str, data_root: str | Path, download: bool, source) -> Dataset:
    if source is not None:
        return _load_own(source, Path(data_root).expanduser().absolute())
    if name == "digits":
        return _load_digits()
    if name not in SPECS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
    num_classes, shape, mean, std, augment = SPECS[name]
    root = Path(data_root).expanduser().absolute()
    try:
        splits = _read_splits(name, root, download)
    except ImportError:
        raise  # a missing package (scipy for SVHN) is not a data problem
    except Exception as e:  # anything torchvision raises while fetching or reading means the files are unusable
        raise _error(name, root, f"{type(e).__name__}: {e}", download) from e
    for x, y in splits:  # structure check: catches mismatched or foreign files torchvision accepts
        if tuple(x.shape[1:]) != shape or len(x) != len(y) or len(y) == 0:
            raise _error(name, root, f"expected {shape} images with one label each, got images {tuple(x.shape)} and {len(y)} labels", download)
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise _error(name, root, f"labels outside 0..{num_classes - 1}", download)
    (train_x, train_y), (test_x, test_y) = splits
    return Dataset(
        name, _u8(train_x), train_y.to(torch.int64).contiguous(), _u8(test_x), test_y.to(torch.int64).contiguous(),
        num_classes, mean, std, augment,
    )


def _u8(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.uint8).contiguous()


def _read_idx(path: Path) -> torch.Tensor:
    """One IDX file of unsigned bytes (MNIST's format: a 4-byte magic 0 0 0x08 ndim, ndim
    big-endian sizes, then the data), as torchvision's MNIST reads it."""
    raw = path.read_bytes()
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    start = 4 + 4 * raw[3]  # the data begins after the magic and the sizes
    if len(raw) < start:
        raise ValueError(f"{path}: header cut short")
    dims = struct.unpack(f">{raw[3]}I", raw[4:start])
    body = np.frombuffer(raw, dtype=np.uint8, offset=start)
    if body.size != math.prod(dims):
        raise ValueError(f"{path}: {body.size} bytes of data for shape {dims}")
    return torch.from_numpy(body.reshape(dims).copy())


def _read_splits(name: str, root: Path, download: bool):
    """[(train_x, train_y), (test_x, test_y)] as tensors, images NCHW."""
    if name in ("mnist", "fashion_mnist") and not download:
        # Read directly: importing torchvision costs more than a whole MNIST epoch
        # (1.6-4 s here), for four files of a trivial format.
        train_x, train_y, test_x, test_y = (_read_idx(root / f) for f in _FILES[name])
        return [(train_x.unsqueeze(1), train_y), (test_x.unsqueeze(1), test_y)]
    import torchvision.datasets as tvd  # only for the datasets it reads (see above)

    if name in ("mnist", "fashion_mnist"):
        cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
        parts = [cls(root, train=t, download=download) for t in (True, False)]
        return [(d.data.unsqueeze(1), d.targets) for d in parts]
    if name in ("cifar10", "cifar100"):
        # torchvision checks every CIFAR file's md5 on load, so real data is strictly verified.
        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        parts = [cls(root, train=t, download=download) for t in (True, False)]
        return [(torch.from_numpy(d.data).permute(0, 3, 1, 2), torch.as_tensor(d.targets)) for d in parts]
    parts = [tvd.SVHN(root, split=s, download=download) for s in ("train", "test")]  # md5-checked too
    return [(torch.from_numpy(d.data), torch.from_numpy(d.labels)) for d in parts]  # data is already NCHW


def _error(name: str, root: Path, reason: str, download: bool) -> DatasetError:
    lines = [f"dataset {name!r}: cannot load from data_root {root}: {reason}", "expected files:"]
    lines += [f"  {root / f}" + ("" if (root / f).is_file() else "  (missing)") for f in _FILES[name]]
    if name in ("mnist", "fashion_mnist"):
        lines.append("to fetch them without the dataset's own host, run: .ci/fetch-data.sh " + str(root))
    elif not download:
        lines.append("place torchvision's files there, or pass download=True where the network allows")
    archive = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}.get(name)
    if archive:
        lines.append(f"(with {archive} in data_root, download=True only extracts it, without the network)")
    return DatasetError("\n".join(lines))


def _load_digits() -> Dataset:
    """scikit-learn's 8x8 digits, values 0..16 kept as uint8, split into a fixed stratified train/test."""
    data, target = _digits_arrays()
    x = torch.from_numpy(data.astype(np.uint8).reshape(-1, 1, 8, 8))
    y = torch.from_numpy(target.astype(np.int64))
    # Same test examples from each class, drawn with numpy's legacy RandomState, whose
    # stream is frozen across numpy versions (sklearn's splitters make no such promise).
    rng = np.random.RandomState(DIGITS_SPLIT_SEED)
    is_test = np.zeros(len(y), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(target == c)
        is_test[rng.choice(idx, DIGITS_TEST_PER_CLASS, replace=False)] = True
    test = torch.from_numpy(is_test)
    train_x = x[~test].contiguous()
    xf = train_x.double()
    return Dataset(
        "digits", train_x, y[~test].contiguous(), x[test].contiguous(), y[test].contiguous(), 10,
        (round(xf.mean().item(), 4),), (round(xf.std().item(), 4),), False,
    )


def _digits_arrays():
    """(data (1797, 64), target) exactly as sklearn's load_digits() returns them.

    Reads the CSV that scikit-learn ships without importing sklearn, whose import
    (scipy.stats) costs seconds per digits cell; falls back to load_digits().
    """
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is not None and csv.is_file():
        a = np.loadtxt(csv, delimiter=",")
        if a.shape == (1797, 65):
            return a[:, :-1], a[:, -1].astype(int)
    from sklearn.datasets import load_digits  # the fallback only: its import takes seconds

    d = load_digits()
    return d.data, d.target


def normalisation(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std as (C, 1, 1) float32 tensors on `device`: made once an
    epoch, not once a step (two small tensors a step were 1% of an LeNet step on CPU)."""
    return tuple(torch.as_tensor(v, dtype=torch.float32, device=device).view(-1, 1, 1) for v in (mean, std))


def to_float(x_uint8: torch.Tensor, mean, std, out: torch.Tensor | None = None) -> torch.Tensor:
    """Normalise a (B, C, H, W) or (C, H, W) batch to float32 on its own device; into
    `out` (a float32 tensor of the batch's shape, in any memory format) when given, with
    the same values bit for bit. `mean` and `std`: per-channel sequences, or `normalisation`'s
    tensors."""
    m, s = normalisation(mean, std, x_uint8.device)
    if out is not None:
        return torch.sub(x_uint8, m, out=out).div_(s)  # uint8 - float32: computed in float32
    return (x_uint8.to(torch.float32) - m) / s


def draw_crops(b: int, generator: torch.Generator, *, pad: int = 4, flip: bool = True):
    """A batch of `b` examples' crop offsets (oy, ox: (B, 1) in [0, 2 pad]) and flips ((B, 1)
    bools, or None without flips), drawn from `generator` in this order, on its device."""
    dev = generator.device
    oy = torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=generator)
    flipped = torch.rand((b, 1), device=dev, generator=generator) < 0.5 if flip else None
    return oy, ox, flipped


def augment_batch(x: torch.Tensor, generator: torch.Generator, *, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Per-example random crop from the zero-padded image, and random horizontal flip,
    drawn from `generator` (draw_crops) and applied in one gather (crop_batch)."""
    oy, ox, flipped = draw_crops(x.shape[0], generator, pad=pad, flip=flip)
    return crop_batch(x, oy.to(x.device), ox.to(x.device), None if flipped is None else flipped.to(x.device), pad=pad)


def crop_batch(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flipped: torch.Tensor | None, *,
               pad: int = 4) -> torch.Tensor:
    """The crops and flips `draw_crops` drew, applied: one gather on x's device for the
    whole batch. dtype and memory format are kept."""
    b, _, h, w = x.shape
    dev = x.device
    rows = oy + torch.arange(h, device=dev)  # (B, H) rows of the padded image
    cols = ox + torch.arange(w, device=dev)  # (B, W)
    if flipped is not None:
        cols = torch.where(flipped, cols.flip(1), cols)
    padded = F.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # (B, H+2p, W+2p, C)
    out = padded[torch.arange(b, device=dev).view(b, 1, 1), rows.view(b, h, 1), cols.view(b, 1, w)]
    out = out.permute(0, 3, 1, 2)  # back to (B, C, H, W), physically channels_last
    if x.is_contiguous(memory_format=torch.channels_last):
        return out
    return out.contiguous()


# ---------------------------------------------------------------- the researcher's own datasets

OWN_TEST_SPLIT_SEED = 0  # an npz without a test split: fixed, not the replicate seed (as digits)


def _load_own(src, data_root: Path) -> Dataset:
    """An npz's arrays or a torchvision class's data, as the definition says, with the same
    checks as the built-in datasets; normalisation from the definition or, computed from the
    training split, rounded to 4 decimals (recorded in cell.json with the file's sha256)."""
    if src.folders is not None:  # streamed from disk: nothing decoded here
        from . import folders  # torchvision's folder listing, only for these datasets

        try:
            train_x, train_y, test_x, test_y = folders.load(src, data_root)
        except folders.LayoutError as e:
            raise DatasetError(str(e)) from None
        return Dataset(src.name, train_x, train_y, test_x, test_y, src.classes, src.mean, src.std, src.augment,
                       src.flip)
    where = f"dataset {src.name!r}"
    try:
        if src.npz is not None:
            (train_x, train_y), test = _read_npz(src.npz_path(data_root), src.shape)
            if test is None:  # held out of the training arrays, the same for every cell
                order = torch.from_numpy(np.random.RandomState(OWN_TEST_SPLIT_SEED).permutation(len(train_y)))
                held, kept = order[:src.test_size].sort().values, order[src.test_size:].sort().values
                test, (train_x, train_y) = (train_x[held], train_y[held]), (train_x[kept], train_y[kept])
        else:
            root = Path(src.root).expanduser().absolute() if src.root else data_root
            (train_x, train_y), test = (_read_torchvision(src.torchvision, root, t, src.shape) for t in (True, False))
    except DatasetError:
        raise
    except ImportError:
        raise
    except Exception as e:  # whatever numpy or torchvision raise on a file they cannot use
        raise DatasetError(f"{where}: cannot read {src.npz or src.torchvision}: {type(e).__name__}: {e}") from e
    for split, (x, y) in (("train", (train_x, train_y)), ("test", test)):
        if len(y) == 0 or len(x) != len(y):
            raise DatasetError(f"{where}: the {split} split has {len(x)} images and {len(y)} labels")
        if int(y.min()) < 0 or int(y.max()) >= src.classes:
            raise DatasetError(f"{where}: {split} labels outside 0..{src.classes - 1} (classes: {src.classes})")
    train_x = _u8(train_x)
    if src.mean is not None:
        mean, std = src.mean, src.std
    else:
        xf = train_x.double().transpose(0, 1).reshape(train_x.shape[1], -1)
        mean = tuple(round(v, 4) for v in xf.mean(1).tolist())
        std = tuple(round(v, 4) for v in xf.std(1).tolist())
    return Dataset(src.name, train_x, train_y.to(torch.int64).contiguous(), _u8(test[0]),
                   test[1].to(torch.int64).contiguous(), src.classes, mean, std, src.augment, src.flip)


def _as_nchw(x: np.ndarray, chw, what: str) -> torch.Tensor:
    layout = image_layout(x.shape, chw)
    if x.dtype != np.uint8 or layout is None:
        raise DatasetError(f"{what}: expected uint8 images of (C, H, W) {tuple(chw)} as (N, C, H, W), "
                           f"(N, H, W, C) or (N, H, W), got {x.dtype} {x.shape}")
    t = torch.from_numpy(np.ascontiguousarray(x))
    if layout == "nhwc":
        return t.permute(0, 3, 1, 2).contiguous()
    return t.unsqueeze(1) if layout == "nhw" else t


def _read_npz(path: Path, chw):
    """((train_x, train_y), (test_x, test_y) or None) from an npz."""
    if not path.is_file():
        raise DatasetError(f"npz {path}: no such file")
    with np.load(path, allow_pickle=False) as z:
        def pair(split):
            x, y = z[f"x_{split}"], z[f"y_{split}"]
            if not np.issubdtype(y.dtype, np.integer):
                raise DatasetError(f"{path}: y_{split} must hold integer labels, not {y.dtype}")
            return _as_nchw(x, chw, f"{path}: x_{split}"), torch.from_numpy(y.astype(np.int64))
        return pair("train"), (pair("test") if "x_test" in z.files else None)


def _read_torchvision(cls_name: str, root: Path, train: bool, chw):
    """One split of torchvision.datasets.<cls_name> (train=True/False, or split='train'/'test'),
    never downloaded: its in-memory arrays where it has them (MNIST-, CIFAR-like classes),
    else every item decoded once."""
    import torchvision.datasets as tvd  # only for the datasets it reads

    cls = getattr(tvd, cls_name, None)
    if not isinstance(cls, type):
        raise DatasetError(f"torchvision.datasets has no dataset class {cls_name!r}")
    try:
        d = cls(str(root), train=train, download=False)
    except TypeError:
        d = cls(str(root), split="train" if train else "test", download=False)
    data = getattr(d, "data", None)
    labels = next((getattr(d, a) for a in ("targets", "labels") if getattr(d, a, None) is not None), None)
    if data is None or labels is None:  # decode item by item (PIL images)
        items = [d[i] for i in range(len(d))]
        data = np.stack([np.asarray(img) for img, _ in items])
        labels = [label for _, label in items]
    x = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    return _as_nchw(x, chw, f"torchvision {cls_name}"), torch.as_tensor(np.asarray(labels), dtype=torch.int64)
