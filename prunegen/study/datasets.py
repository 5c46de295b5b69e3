"""Datasets of the researcher's own, defined in a study's `datasets:` block and named by its
benchmarks like a built-in one:

    datasets:
      lab_scans:                       # arrays a lab already has
        npz: scans.npz                 # relative to data_root: x_train, y_train [, x_test, y_test]
        shape: [1, 28, 28]             # (C, H, W); images stored (N, C, H, W), (N, H, W, C) or (N, H, W)
        classes: 10
        test_size: 2000                # without x_test: held out of the training arrays (fixed seed)
      kmnist:                          # any torchvision dataset class, by name, never downloaded
        torchvision: KMNIST
        root: data                     # default: the study's data_root
        shape: [1, 28, 28]
        classes: 10

      imagenet:                        # images in class folders, decoded from disk as they stream
        folders: imagenet              # relative to data_root: train/<class>/<image>, val/<class>/<image>
        shape: [3, 224, 224]           # what a training crop / an evaluation centre crop is
        classes: 1000
        mean: [123.675, 116.28, 103.53]  # required: computing it would decode every image
        std: [58.395, 57.12, 57.375]
        augment: true                  # OpenLTH's RandomResizedCrop + flip; else resize + centre crop
        resize: 256                    # evaluation: short side resized to it (default H x 256 / 224)

Optional for all: `mean` and `std` (per channel, pixel scale 0..255; otherwise computed from
the training split when the cell loads the data, and recorded in cell.json), `augment` (crop
and flip, default false) and `flip`. A definition enters the hash of every cell that uses it.

The study knows the shape and classes from the definition, and the sizes from the npz's
array headers where the file is present (read here without numpy), so what the data could
refute is refused when the study loads, as for the built-in datasets.
"""

from __future__ import annotations

import ast
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import shapes
from .grid import StudyError


@dataclass(frozen=True)
class DatasetSource:
    name: str
    npz: str | None  # as written (relative to data_root unless absolute)
    torchvision: str | None  # a class of torchvision.datasets
    root: str | None  # torchvision: its root (default data_root)
    shape: tuple[int, int, int]
    classes: int
    test_size: int | None = None  # npz without a test split: examples held out for it
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augment: bool = False
    flip: bool = True
    folders: str | None = None  # images in class folders under data_root (prunegen/engine/folders.py)
    resize: int | None = None  # folders: the evaluation transform's short side
    crop_scale: tuple[float, ...] | None = None  # folders: RandomResizedCrop's area range (OpenLTH's 0.1-1)
    crop_ratio: tuple[float, ...] | None = None  # and aspect-ratio range (0.8-1.25)

    def hashed(self) -> dict:
        """What enters the cell hash: the definition as resolved (not the data_root)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items() if v is not None}

    def npz_path(self, data_root: str | Path) -> Path:
        return Path(data_root).expanduser() / self.npz  # an absolute npz path stays itself


def parse(name: str, raw: dict, source: str) -> DatasetSource:
    where = f"{source}: datasets.{name}"
    if name in shapes.DATASET_SHAPES:
        raise StudyError(f"{where}: {name!r} is a built-in dataset; give yours another name")
    shape = tuple(int(v) for v in raw["shape"])
    for key in ("mean", "std"):
        if key in raw and len(raw[key]) != shape[0]:
            raise StudyError(f"{where}.{key}: one value per channel ({shape[0]}), got {len(raw[key])}")
    if "test_size" in raw and "npz" not in raw:
        raise StudyError(f"{where}.test_size: only for an npz without a test split")
    folders = {}
    if "folders" in raw:
        for key in ("mean", "std"):
            if key not in raw:
                raise StudyError(f"{where}.{key}: required for image folders (computing it would decode every "
                                 "training image)")
        folders = {"folders": raw["folders"], "resize": int(raw.get("resize", round(shape[1] * 256 / 224))),
                   "crop_scale": tuple(float(v) for v in raw.get("crop_scale", (0.1, 1.0))),
                   "crop_ratio": tuple(float(v) for v in raw.get("crop_ratio", (0.8, 1.25)))}
        if folders["resize"] < max(shape[1:]):
            raise StudyError(f"{where}.resize: {folders['resize']} is smaller than the {shape[1]}x{shape[2]} "
                             "centre crop taken after it")
    else:
        for key in ("resize", "crop_scale", "crop_ratio"):
            if key in raw:
                raise StudyError(f"{where}.{key}: only for image folders (folders:)")
    return DatasetSource(
        name=name, npz=raw.get("npz"), torchvision=raw.get("torchvision"), root=raw.get("root"), shape=shape,
        classes=int(raw["classes"]), test_size=raw.get("test_size"),
        mean=tuple(float(v) for v in raw["mean"]) if "mean" in raw else None,
        std=tuple(float(v) for v in raw["std"]) if "std" in raw else None,
        augment=bool(raw.get("augment", False)), flip=bool(raw.get("flip", True)), **folders)


def npz_arrays(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{array name: (dtype descr, shape)} of an .npz, from each .npy member's header alone
    (format 1.0-3.0: magic, version, header length, then a Python dict literal)."""
    out = {}
    with zipfile.ZipFile(path) as z:
        for member in z.namelist():
            if not member.endswith(".npy"):
                continue
            with z.open(member) as f:
                head = f.read(10)
                if head[:6] != b"\x93NUMPY":
                    raise ValueError(f"{member} is not a .npy array")
                # the header's length: 2 bytes in format 1.0, 4 from 2.0 on
                n = struct.unpack("<H", head[8:10])[0] if head[6] == 1 else struct.unpack("<I", head[8:10] + f.read(2))[0]
                header = ast.literal_eval(f.read(n).decode("latin1"))
            out[member[:-4]] = (header["descr"], tuple(header["shape"]))
    return out


def image_layout(shape: tuple[int, ...], chw: tuple[int, int, int]) -> str | None:
    """How (N, ...) images of `shape` hold (C, H, W): 'nchw', 'nhwc', 'nhw' (one channel), or None."""
    c, h, w = chw
    if tuple(shape[1:]) == (c, h, w):
        return "nchw"
    if tuple(shape[1:]) == (h, w, c):
        return "nhwc"
    if c == 1 and tuple(shape[1:]) == (h, w):
        return "nhw"
    return None


def sizes(ds: DatasetSource, data_root: str | Path, source: str) -> tuple[int, int] | None:
    """(training, test) examples, from the npz's headers (None where unknown without the
    data: a torchvision class, a file not here yet). A header that contradicts the
    definition is refused, naming the field."""
    if ds.npz is None:
        return None
    path = ds.npz_path(data_root)
    if not path.is_file():
        return None
    where = f"{source}: datasets.{ds.name}"
    try:
        arrays = npz_arrays(path)
    except (OSError, ValueError, SyntaxError, zipfile.BadZipFile, KeyError) as e:
        raise StudyError(f"{where}.npz: {path} is not a readable .npz ({e})") from None
    for need in ("x_train", "y_train"):
        if need not in arrays:
            raise StudyError(f"{where}.npz: {path} has no {need!r} array (it has {', '.join(sorted(arrays)) or 'none'})")
    has_test = "x_test" in arrays
    if has_test != ("y_test" in arrays):
        raise StudyError(f"{where}.npz: {path} has one of x_test and y_test without the other")
    if has_test == (ds.test_size is not None):
        raise StudyError(f"{where}.test_size: " + ("the file has a test split: drop test_size" if has_test
                                                     else f"{path} has no x_test: say how many training examples to hold out"))
    n = {}
    for split in ("train", "test") if has_test else ("train",):
        (xd, xs), (_, ys) = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if xd not in ("|u1", "u1"):
            raise StudyError(f"{where}.npz: x_{split} must be uint8 images, not {xd}")
        if image_layout(xs, ds.shape) is None:
            raise StudyError(f"{where}.shape: {list(ds.shape)} does not fit x_{split} of shape {list(xs)} in {path}")
        if len(ys) != 1 or ys[0] != xs[0]:
            raise StudyError(f"{where}.npz: y_{split} of shape {list(ys)} is not one label per image of x_{split} ({xs[0]})")
        n[split] = xs[0]
    if not has_test:
        if ds.test_size >= n["train"]:
            raise StudyError(f"{where}.test_size: {ds.test_size} leaves no training examples of {n['train']}")
        return n["train"] - ds.test_size, ds.test_size
    return n["train"], n["test"]
