"""What CUDA's deterministic algorithms cost: the engine's training step (train_epoch) for
ResNet-20 and VGG-16 (CIFAR-shaped, crops and flips, batch 128) and LeNet-300-100, with the
study's `deterministic: true` (cuDNN deterministic, no autotuning, deterministic algorithms,
CUBLAS_WORKSPACE_CONFIG) against `false`, alternated in one process, median over repeats;
and whether two deterministic runs give the same weights (they must), and two
nondeterministic ones (they may not). On a CPU the switch changes nothing (its ops are
deterministic at a fixed thread count): the CPU form checks the script runs.

    .venv/bin/python benchmarks/determinism.py [--device cuda] [--steps 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts: the deterministic runs need it

import torch  # noqa: E402

from benchmarks.pack import CASES as PACK_CASES  # noqa: E402
from prunegen.engine import models  # noqa: E402
from prunegen.engine.seeds import generator  # noqa: E402
from prunegen.engine.splits import Split, Splits  # noqa: E402
from prunegen.engine.training import make_optimizer, train_epoch, use_channels_last  # noqa: E402
from prunegen.study.hparams import Schedule, Train  # noqa: E402

CASES = {**PACK_CASES, "vgg16-cifar10": {**PACK_CASES["resnet20-cifar10"], "model": {"name": "vgg16", "width": 64}}}


def _switch(on: bool) -> None:
    torch.backends.cudnn.benchmark = not on
    torch.backends.cudnn.deterministic = on
    torch.use_deterministic_algorithms(on)


def one_run(case: dict, steps: int, device: torch.device, on: bool) -> tuple[float, torch.Tensor]:
    """Seconds for `steps` training steps from a fixed start, and the final weights' checksum."""
    _switch(on)
    g = torch.Generator().manual_seed(0)
    n = steps * 128
    x = torch.randint(0, 256, (n, *case["shape"]), generator=g, dtype=torch.uint8).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    train = Split("train", x, y, y, torch.arange(n, device=device))
    splits = Splits(train=train, val=train, test=train, num_classes=10, mean=case["mean"], std=case["std"],
                    augment=case["augment"], flip=case["augment"])
    torch.manual_seed(0)
    model = models.build_model(case["model"], input_shape=case["shape"], num_classes=10).to(device)
    cl = use_channels_last(model, device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    hp = Train(epochs=1, batch_size=128, lr=0.05, momentum=0.9, weight_decay=1e-4, schedule=Schedule(kind="constant"))
    optimizer = make_optimizer(model, hp)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    train_epoch(model, optimizer, [], splits, hp, generator(0, "det"), 0, channels_last=cl)
    seconds = time.perf_counter() - t0
    return seconds, torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = torch.device(args.device)
    results = {"device": args.device, "torch": torch.__version__, "steps": args.steps, "cases": {}}
    for name in args.cases.split(","):
        case = CASES[name]
        one_run(case, 2, device, True)  # warm-up: kernels, allocator
        times = {True: [], False: []}
        weights = {True: [], False: []}
        for _ in range(args.repeats):
            for on in (True, False):
                s, w = one_run(case, args.steps, device, on)
                times[on].append(s)
                weights[on].append(w)
        on_s, off_s = statistics.median(times[True]), statistics.median(times[False])
        row = {"deterministic_s": on_s, "nondeterministic_s": off_s, "cost_ratio": on_s / off_s,
               "deterministic_runs_identical": all(torch.equal(weights[True][0], w) for w in weights[True]),
               "nondeterministic_runs_identical": all(torch.equal(weights[False][0], w) for w in weights[False])}
        results["cases"][name] = row
        print(f"{name:17s} deterministic x{row['cost_ratio']:.2f} the time of nondeterministic "
              f"({on_s / args.steps * 1e3:.2f} vs {off_s / args.steps * 1e3:.2f} ms/step); identical runs: "
              f"deterministic {row['deterministic_runs_identical']}, nondeterministic "
              f"{row['nondeterministic_runs_identical']} ({args.device})", flush=True)
    _switch(False)
    out = REPO / "benchmarks/out"
    out.mkdir(exist_ok=True)
    (out / f"determinism-{args.device}.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
