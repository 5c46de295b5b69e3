"""Seconds per epoch of each benchmark on this device, for `prunegen plan --calibrate`.

The engine's own training step (`training.train_epoch`: model, mask, optimizer,
channels_last and autocast as a cell sets them up) is timed for a few hundred steps
on synthetic uint8 data of the dataset's shape (timing does not depend on pixel
values, so no dataset has to be there), and the no-grad evaluation likewise. An
epoch = steps per epoch x seconds per step + (validation + test examples) x seconds
per evaluated example, as `training.train` runs one. The figures are written to
`results/<study>/calibration.json`, which prunegen.cluster.plan reads.

At full width: a downscaled model's epochs are shorter, so their estimate is high.
"""

from __future__ import annotations

import datetime
import logging
import math
import time

import torch

from ..engine import pruning
from ..engine.data import SPECS
from ..engine.models import build_model
from ..engine.run import resolve_device
from ..engine.seeds import generator
from ..engine.splits import Split, Splits
from ..engine.training import evaluate, make_optimizer, train_epoch, use_channels_last
from ..records.store import write_json
from ..study.grid import Study
from ..study.hparams import Benchmark
from .plan import calibration_path

log = logging.getLogger("prunegen")

DIGITS_SPEC = (10, (1, 8, 8), (4.88,), (6.02,), False)  # shape and class count of sklearn's digits


def _splits(spec, n: int, device: torch.device, seed: int) -> Splits:
    num_classes, shape, mean, std, augment = spec
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g).to(device)
    y = torch.randint(0, num_classes, (n,), generator=g).to(device)
    train = Split("train", x, y, y, torch.arange(n, device=device))
    return Splits(train=train, val=train, test=train, num_classes=num_classes, mean=mean, std=std,
                  augment=augment, flip=augment)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_seconds(bm: Benchmark, device: torch.device, steps: int = 200) -> dict:
    """Time `steps` training steps and an evaluation pass of one benchmark at full width."""
    if bm.source is not None:  # the researcher's own: its shape, classes, and any normalisation
        c = bm.source.shape[0]
        spec = (bm.source.classes, bm.source.shape, (127.5,) * c, (64.0,) * c, bm.data.augment)
    else:
        spec = DIGITS_SPEC if bm.dataset == "digits" else SPECS[bm.dataset]
    hp = bm.train
    torch.manual_seed(0)
    model = build_model(bm.model, input_shape=spec[1], num_classes=spec[0]).to(device)
    mask = {n: m.to(device) for n, m in pruning.full_mask(model, bm.prune.ignore).items()}
    channels_last = use_channels_last(model, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    bound, optimizer = pruning.bind(model, mask), make_optimizer(model, hp)
    model.train()

    def timed_epoch(n_steps: int, tag: str) -> float:
        splits = _splits(spec, n_steps * hp.batch_size, device, seed=len(tag))
        _sync(device)
        t0 = time.perf_counter()
        train_epoch(model, optimizer, bound, splits, hp, generator(0, tag), 0,
                    channels_last=channels_last)  # returns host numbers: the device is done
        return time.perf_counter() - t0

    timed_epoch(max(2, steps // 10), "warmup")  # first-call costs: allocator, kernels, autotuning
    step_s = timed_epoch(steps, "timed") / steps
    n_eval = min(4 * hp.eval_batch_size, 8192)
    ev = _splits(spec, n_eval, device, seed=1)
    evaluate(model, ev.train, ev, hp.eval_batch_size, channels_last)
    _sync(device)
    t0 = time.perf_counter()
    evaluate(model, ev.train, ev, hp.eval_batch_size, channels_last)
    _sync(device)
    eval_s = (time.perf_counter() - t0) / n_eval
    train_n, test_n = bm.sizes or (10 * bm.data.val_size, bm.data.val_size)  # (unknown: a guess)
    train_n -= bm.data.val_size
    steps_per_epoch = math.ceil(train_n / hp.batch_size)
    return {"epoch_seconds": steps_per_epoch * step_s + (bm.data.val_size + test_n) * eval_s,
            "step_seconds": step_s, "steps_timed": steps, "steps_per_epoch": steps_per_epoch,
            "eval_seconds_per_example": eval_s, "eval_examples_per_epoch": bm.data.val_size + test_n}


def calibrate(study: Study, steps: int = 200, device: str | None = None) -> dict:
    """Time every benchmark of the study on this device; write and return the calibration."""
    dev = resolve_device(device or study.device)
    out = {"device": str(dev),
           "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "benchmarks": {}}
    for name, bm in study.benchmarks.items():
        out["benchmarks"][name] = epoch_seconds(bm, dev, steps)
        log.info("calibrated %s on %s: %.3f s per epoch (%.2f ms per step)", name, dev,
                 out["benchmarks"][name]["epoch_seconds"], 1000 * out["benchmarks"][name]["step_seconds"])
    write_json(out, calibration_path(study))
    return out
