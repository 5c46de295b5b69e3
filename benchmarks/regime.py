"""What would make the paper's 40-epoch LeNet cycles affordable on a CPU, measured (issue 26).

One epoch of LeNet-300-100 on the real MNIST (55,000 training examples, batch 128) as a
cell trains it (`prunegen.engine.training.train_epoch`, the model and optimizer a cell
builds), split into training and the per-epoch evaluation of the validation and test
splits, in fp32 (what cells compute) and under CPU bf16 autocast (a lead: this CPU's
AVX-512 BF16 runs a 128x784 @ 784x300 product about 2.2 times faster than fp32), and the
bare product itself in both precisions. Alternated, median over repeats, one thread as a
cell job has; prints one summary line and writes JSON to benchmarks/out/regime.json.

The figures decide the study's regime: what fraction of an epoch evaluation is, and
whether bf16 would pay for a validation run against fp32 (see the session note).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch

from prunegen.engine import pruning
from prunegen.engine.data import load_dataset
from prunegen.engine.models import build_model
from prunegen.engine.seeds import generator
from prunegen.engine.splits import make_splits
from prunegen.engine.training import _mean_metrics, make_optimizer, train_epoch
from prunegen.study.hparams import Schedule, Train
from prunegen.study.shapes import default_ignore

REPO = Path(__file__).resolve().parents[1]
SPEC = {"name": "mlp", "hidden": [300, 100]}


def _bf16(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def one_epoch(splits, bf16: bool, epoch: int) -> dict:
    hp = Train(epochs=40, batch_size=128, lr=0.1, momentum=0.0, weight_decay=0.0, schedule=Schedule(kind="constant"))
    torch.manual_seed(0)
    model = build_model(SPEC, input_shape=(1, 28, 28), num_classes=10)
    bound = pruning.bind(model, pruning.full_mask(model, default_ignore(SPEC)))
    opt = make_optimizer(model, hp)
    with _bf16(bf16):
        t0 = time.perf_counter()
        train_epoch(model, opt, bound, splits, hp, generator(0, "regime", epoch), 0)
        t1 = time.perf_counter()
        _mean_metrics(model, splits.val, splits, hp, False)
        _mean_metrics(model, splits.test, splits, hp, False)
        t2 = time.perf_counter()
    return {"train_s": t1 - t0, "eval_s": t2 - t1}


def product(bf16: bool, n: int = 200) -> float:
    a, b = torch.randn(128, 784), torch.randn(784, 300)
    if bf16:
        a, b = a.bfloat16(), b.bfloat16()
    a @ b
    t0 = time.perf_counter()
    for _ in range(n):
        a @ b
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset("mnist", REPO / "data")
    splits = make_splits(ds, val_size=5000, noise=0.0, noise_mode="other_class", seed=0, augment=False,
                         device=torch.device("cpu"))
    runs = {"fp32": [], "bf16": []}
    for r in range(args.repeats):
        for name in ("fp32", "bf16"):  # alternated: the machine's speed drifts
            runs[name].append(one_epoch(splits, name == "bf16", r))
    med = {name: {k: statistics.median(x[k] for x in v) for k in ("train_s", "eval_s")} for name, v in runs.items()}
    prod = {name: statistics.median(product(name == "bf16") for _ in range(args.repeats)) for name in runs}
    out = {"epoch": med, "product_s": prod,
           "eval_share_fp32": med["fp32"]["eval_s"] / (med["fp32"]["train_s"] + med["fp32"]["eval_s"]),
           "epoch_speedup_bf16": (med["fp32"]["train_s"] + med["fp32"]["eval_s"])
           / (med["bf16"]["train_s"] + med["bf16"]["eval_s"]),
           "product_speedup_bf16": prod["fp32"] / prod["bf16"], "repeats": args.repeats}
    path = REPO / "benchmarks" / "out" / "regime.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"LeNet-300-100 MNIST epoch, 1 thread: fp32 {med['fp32']['train_s']:.3f} s training + "
          f"{med['fp32']['eval_s']:.3f} s evaluation ({100 * out['eval_share_fp32']:.0f}% of the epoch); bf16 "
          f"autocast x{out['epoch_speedup_bf16']:.2f} per epoch; the 128x784 @ 784x300 product x"
          f"{out['product_speedup_bf16']:.2f} in bf16 -> {path}")


if __name__ == "__main__":
    main()
