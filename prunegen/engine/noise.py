"""Random label noise on the training set.

The noisy set depends on (dataset, noise, seed) only, never on arm or level, so
every arm of a replicate memorizes (or not) the same examples.
"""

from __future__ import annotations

import torch

from .seeds import generator

MODES = ("other_class", "any_class")


def noisy_labels(labels: torch.Tensor, noise: float, num_classes: int, *, seed: int,
                 dataset: str, mode: str = "other_class") -> torch.Tensor:
    """Labels with round(noise * N) examples relabelled.

    other_class: the new label is uniform over the other classes (exact rate).
    any_class: uniform over all classes, as OpenLTH does (the effective rate is lower).
    """
    if mode not in MODES:
        raise ValueError(f"noise_mode must be one of {MODES}, got {mode!r}")
    if not 0 <= noise < 1:
        raise ValueError(f"noise must be in [0, 1), got {noise!r}")
    labels = labels.cpu()
    count = round(noise * len(labels))
    g = generator(seed, "noise", dataset, repr(float(noise)))
    chosen = torch.randperm(len(labels), generator=g)[:count]
    out = labels.clone()
    if mode == "other_class":
        shift = torch.randint(1, num_classes, (count,), generator=g)
        out[chosen] = (labels[chosen] + shift) % num_classes
    else:
        out[chosen] = torch.randint(0, num_classes, (count,), generator=g)
    return out
