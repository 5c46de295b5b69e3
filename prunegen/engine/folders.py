"""Image datasets streamed from class folders (ImageNet's layout), decoded by DataLoader workers.

    <data_root>/<folders>/train/<class>/<image>   the training set (the validation split is held out of it)
    <data_root>/<folders>/val/<class>/<image>     the test split (the same class folders, or some of them)

Examples are listed as torchvision's ImageFolder lists them (classes sorted, files sorted within a
class): an example's index is its position in that list, as a row of an in-memory dataset. The
list is kept in an index (folder_index.py), so that cells do not list ImageNet again. A split
holds `FolderImages` (the files) where an in-memory one holds a uint8 tensor; `make_splits`,
label noise and TIE index them the same way.

What the in-memory path guarantees holds (docs/design.md, "Streamed image folders"): the epoch's
order is the plan's `perm`, drawn from the cell's (seed, cycle, epoch) generator; `StepBatches`
yields each step's GLOBAL batch of positions from it; a training example's crop and flip are drawn
from a generator seeded by (that epoch's seed, the example's index) alone, so they do not depend on
which worker (or, later, which rank) decodes it. Transforms are OpenLTH's ImageNet ones:
RandomResizedCrop (scale 0.1-1, ratio 0.8-1.25) + horizontal flip for training, resize (short side
256 for 224) + centre crop for evaluation and for training without augmentation.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from . import folder_index
from .seeds import derive

LAYOUT = ("expected layout: {root}/train/<class>/<image> (one folder per class) and {root}/val/<class>/<image> "
          "(the test split, in the same class folders; ImageNet's validation images sorted into them)")
WORKERS_ENV = "PRUNEGEN_LOADER_WORKERS"  # DataLoader workers per cell (default: the cores this process may use, less one)


class FolderImages:
    """The images of one split as files: what `Split.x` holds for a streamed dataset. Indexed
    like a tensor of images (by position), and `.to(device)` names where decoded batches go."""

    def __init__(self, paths: np.ndarray, shape: tuple[int, int, int], transform: Transform,
                 device: torch.device | str = "cpu"):
        self.paths = paths  # numpy array of bytes (os.fsencode): a third of str's memory for ImageNet's 1.3M
        self.image_shape = tuple(shape)
        self.transform = transform
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.image_shape)

    def __getitem__(self, idx) -> FolderImages:
        idx = idx.cpu().numpy() if isinstance(idx, torch.Tensor) else idx
        return FolderImages(self.paths[idx], self.image_shape, self.transform, self.device)

    def to(self, device, non_blocking: bool = False) -> FolderImages:
        return FolderImages(self.paths, self.image_shape, self.transform, device)

    def load(self) -> torch.Tensor:
        """Every image decoded with the evaluation transform, as one uint8 tensor on the device
        (for the few batches a pruning method reads)."""
        if len(self) == 0:
            return torch.empty((0, *self.image_shape), dtype=torch.uint8, device=self.device)
        return torch.stack([self.transform.evaluate(p) for p in self.paths]).to(self.device)


class Transform:
    """OpenLTH's ImageNet transforms at the dataset's (C, H, W), on PIL images, to uint8 (C, H, W)."""

    def __init__(self, shape, resize: int, scale=(0.1, 1.0), ratio=(0.8, 1.25)):
        self.channels, self.size = shape[0], [int(shape[1]), int(shape[2])]
        self.resize, self.scale, self.ratio = int(resize), tuple(scale), tuple(ratio)

    def _open(self, path):
        from PIL import Image  # lazily, as torchvision below: training.py imports this module in every cell

        with Image.open(os.fsdecode(path)) as img:
            return img.convert("RGB" if self.channels == 3 else "L")

    @staticmethod
    def _tensor(img) -> torch.Tensor:
        a = np.asarray(img, dtype=np.uint8)
        # HWC -> CHW in numpy: torch's copy of one small image went through its thread pool (8 ms
        # an image in a main process sharing its cores, against 0.2 ms here)
        return torch.from_numpy(np.ascontiguousarray((a[:, :, None] if a.ndim == 2 else a).transpose(2, 0, 1)))

    def evaluate(self, path: str) -> torch.Tensor:
        """Resize the short side, then centre crop (OpenLTH's `_transforms`)."""
        import torchvision.transforms.functional as TF  # seconds to import: only where images are decoded

        img = TF.center_crop(TF.resize(self._open(path), self.resize), self.size)
        return self._tensor(img)

    def train(self, path: str, seed: int, flip: bool) -> torch.Tensor:
        """RandomResizedCrop and (with `flip`) a horizontal flip, drawn by torchvision's own
        get_params from the global generator seeded with `seed`, inside a fork of it: this
        process's generator is left as it was."""
        # torchvision costs seconds to import: only where images are decoded
        import torchvision.transforms as T
        import torchvision.transforms.functional as TF

        img = self._open(path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            i, j, h, w = T.RandomResizedCrop.get_params(img, self.scale, self.ratio)
            flipped = flip and bool(torch.rand(1) < 0.5)
        img = TF.resized_crop(img, i, j, h, w, self.size, interpolation=TF.InterpolationMode.BILINEAR)
        return self._tensor(TF.hflip(img) if flipped else img)


def example_seed(epoch_seed: int, index: int) -> int:
    """The seed of one training example's crop and flip in one epoch: (seed, cycle, epoch) through
    `epoch_seed` (the epoch generator's), and the example's index in the dataset."""
    return derive(epoch_seed, "augment", int(index))


class StepBatches(torch.utils.data.Sampler):
    """Each step's GLOBAL batch: the positions `perm[i * bs:(i + 1) * bs]` for steps `first`.. of the
    epoch, as lists (a data-parallel run shards each list by rank; the crops do not depend on it)."""

    def __init__(self, perm: torch.Tensor, batch_size: int, first: int = 0, shard=None):
        self.perm, self.batch_size, self.first = perm.cpu(), int(batch_size), int(first)
        self.shard = shard  # global batch size -> this rank's rows [lo, hi) of it (engine.ranks)

    def __len__(self) -> int:
        return max(0, -(-len(self.perm) // self.batch_size) - self.first)

    def __iter__(self):
        for i in range(self.first, self.first + len(self)):
            batch = self.perm[i * self.batch_size:(i + 1) * self.batch_size]
            lo, hi = self.shard(len(batch)) if self.shard is not None else (0, len(batch))
            yield batch[lo:hi].tolist()


class _Decoded(torch.utils.data.Dataset):
    """Position in the split -> its decoded uint8 image: augmented (seeded per example) or not."""

    def __init__(self, images: FolderImages, index: np.ndarray | None, epoch_seed: int | None, flip: bool):
        self.paths, self.transform = images.paths, images.transform
        self.index, self.epoch_seed, self.flip = index, epoch_seed, flip

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, pos: int) -> torch.Tensor:
        if self.epoch_seed is None:
            return self.transform.evaluate(self.paths[pos])
        return self.transform.train(self.paths[pos], example_seed(self.epoch_seed, self.index[pos]), self.flip)


def workers() -> int:
    """DataLoader workers of a cell: $PRUNEGEN_LOADER_WORKERS, else the cores this process may use
    less one (the training loop's). Results do not depend on it."""
    if os.environ.get(WORKERS_ENV):
        return int(os.environ[WORKERS_ENV])
    return max(0, len(os.sched_getaffinity(0)) - 1)


def _loader(dataset, batch_sampler, device: torch.device):
    n = workers()
    return torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, num_workers=n,
                                       pin_memory=device.type == "cuda", prefetch_factor=4 if n else None)


def train_batches(images: FolderImages, index: torch.Tensor, perm: torch.Tensor, batch_size: int, first: int,
                  epoch_seed: int, augment: bool, flip: bool, shard=None):
    """The epoch's uint8 training batches from step `first` on, on the images' device, in the plan's
    order; augmented with each example's own crop and flip (`example_seed`) when `augment`;
    `shard`: a data-parallel rank's rows of each global batch (StepBatches)."""
    data = _Decoded(images, index.cpu().numpy(), epoch_seed if augment else None, flip)
    for x in _loader(data, StepBatches(perm, batch_size, first, shard), images.device):
        yield x.to(images.device, non_blocking=True)


def eval_batches(images: FolderImages, batch_size: int, numbers=None):
    """The split in order, in batches of `batch_size`, with the evaluation transform; only the
    batches `numbers` (a data-parallel rank's, Ranks.batches) when given."""
    n = len(images)
    numbers = range(-(-n // batch_size)) if numbers is None else numbers
    batches = [range(k * batch_size, min(n, (k + 1) * batch_size)) for k in numbers]  # (small: ranges)
    for x in _loader(_Decoded(images, None, None, False), batches, images.device):
        yield x.to(images.device, non_blocking=True)


def root_of(src, data_root) -> Path:
    return (Path(data_root).expanduser() / src.folders).absolute()


class LayoutError(ValueError):
    """The folders are missing or not laid out as LAYOUT says; the message names the path
    (prunegen.engine.data raises it as its DatasetError)."""


def check_present(src, data_root) -> Path:
    """The dataset's root, if its train/ and val/ folders are there; else LayoutError naming the
    path and the layout (cheap: run before a data-parallel cell starts its ranks)."""
    root = root_of(src, data_root)
    missing = [d for d in ("train", "val") if not (root / d).is_dir()]
    if missing:
        raise LayoutError(f"dataset {src.name!r}: no {' and no '.join(f'{d}/' for d in missing)} folder in "
                          f"{root}\n" + LAYOUT.format(root=root))
    return root


def load(src, data_root):
    """A `folders:` dataset of the study as (train_x, train_y, test_x, test_y): FolderImages and
    int64 labels (no image is decoded here). Raises LayoutError naming the path and the layout."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes  # only for these datasets

    root = check_present(src, data_root)
    where = f"dataset {src.name!r}"
    try:
        classes, _ = find_classes(str(root / "train"))
        val_classes, _ = find_classes(str(root / "val"))
        unknown = sorted(set(val_classes) - set(classes))
        if unknown:
            raise LayoutError(f"{where}: {root / 'val'} has class folders that train/ has not: {unknown[:5]}\n"
                               + LAYOUT.format(root=root))
        if len(classes) != src.classes:
            raise LayoutError(f"{where}: {root / 'train'} has {len(classes)} class folders, the study says "
                               f"classes: {src.classes}\n" + LAYOUT.format(root=root))
        listed = folder_index.listing(root, classes, IMG_EXTENSIONS)  # ImageFolder's list, kept in an index
    except OSError as e:
        raise LayoutError(f"{where}: cannot list {root}: {e}\n" + LAYOUT.format(root=root)) from e
    for d in ("train", "val"):
        if not len(listed[d][0]):
            raise LayoutError(f"{where}: no images ({', '.join(IMG_EXTENSIONS)}) under {root / d}\n"
                               + LAYOUT.format(root=root))
    transform = Transform(src.shape, src.resize, src.crop_scale, src.crop_ratio)
    (train_x, train_y), (test_x, test_y) = (
        (FolderImages(paths, src.shape, transform), torch.from_numpy(labels)) for paths, labels in
        (listed["train"], listed["val"]))
    return train_x, train_y, test_x, test_y
