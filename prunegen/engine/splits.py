"""The three splits a cell trains and evaluates on, held as tensors on the device.

The validation split is held out of the training set (seeded by the replicate,
never noised) because the paper picks the best sparsity on it; the test set is
only reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .noise import noisy_labels
from .seeds import generator


@dataclass(frozen=True)
class Split:
    name: str
    x: torch.Tensor          # uint8 (N, C, H, W) on the device
    y: torch.Tensor          # labels trained on / evaluated against (noisy for train)
    true_y: torch.Tensor     # clean labels
    index: torch.Tensor      # position in the dataset's own train or test set

    def __len__(self) -> int:
        return len(self.y)

    @property
    def is_noisy(self) -> torch.Tensor:
        return self.y != self.true_y


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool
    flip: bool


def make_splits(dataset, *, val_size: int, noise: float, noise_mode: str, seed: int,
                augment: bool, device: torch.device | str) -> Splits:
    n = len(dataset.train_y)
    if not 0 <= val_size < n:
        raise ValueError(f"data.val_size={val_size} must be in [0, {n}) for dataset {dataset.name}")
    order = torch.randperm(n, generator=generator(seed, "val-split", dataset.name))
    val_idx, train_idx = order[:val_size].sort().values, order[val_size:].sort().values
    true_train = dataset.train_y[train_idx]
    observed = noisy_labels(true_train, noise, dataset.num_classes, seed=seed,
                            dataset=dataset.name, mode=noise_mode)

    def split(name, x, y, true_y, index):
        return Split(name, x.to(device), y.to(device), true_y.to(device), index.to(device))

    test_index = torch.arange(len(dataset.test_y))
    return Splits(
        train=split("train", dataset.train_x[train_idx], observed, true_train, train_idx),
        val=split("val", dataset.train_x[val_idx], dataset.train_y[val_idx], dataset.train_y[val_idx], val_idx),
        test=split("test", dataset.test_x, dataset.test_y, dataset.test_y, test_index),
        num_classes=dataset.num_classes, mean=dataset.mean, std=dataset.std,
        augment=augment, flip=dataset.mirrorable,  # digits on house numbers are not mirror-symmetric
    )
