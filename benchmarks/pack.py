"""Aggregate training throughput when k cells share one device, against one cell alone.

k separate processes (spawned, as k cell jobs would be) each build the engine's model,
mask, optimizer and tensor splits the way `prunegen.cell` does, on synthetic uint8 data
of the benchmark's shape, run a short warm-up epoch, wait at a barrier, then time one
epoch of `prunegen.training.train_epoch` of a fixed number of steps. Aggregate images/s
= k x steps x batch / (last end - first start). On CPU every process gets one thread.

Cases: LeNet-300-100 (mlp [300, 100]) on MNIST-shaped data, batch 128; ResNet-20 on
CIFAR-shaped data with the engine's augmentation, batch 128.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = {  # shape, model, default steps on (cpu, cuda)
    "lenet300-mnist": {"shape": (1, 28, 28), "model": {"name": "mlp", "hidden": [300, 100]}, "augment": False,
                       "mean": (33.32,), "std": (78.57,), "steps": {"cpu": 100, "cuda": 1000}},
    "resnet20-cifar10": {"shape": (3, 32, 32), "model": {"name": "resnet20", "width": 16}, "augment": True,
                         "mean": (125.3, 123.0, 113.9), "std": (63.0, 62.1, 66.7), "steps": {"cpu": 4, "cuda": 300}},
}
BATCH = 128


def _splits(case: dict, steps: int, device, seed: int):
    import torch

    from prunegen.engine.splits import Split, Splits

    n = steps * BATCH
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *case["shape"]), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    empty = Split("val", x[:0].to(device), y[:0].to(device), y[:0].to(device), torch.arange(0).to(device))
    train = Split("train", x.to(device), y.to(device), y.to(device), torch.arange(n).to(device))
    return Splits(train=train, val=empty, test=empty, num_classes=10, mean=case["mean"], std=case["std"],
                  augment=case["augment"], flip=True)


def worker(rank: int, name: str, steps: int, warmup: int, device_name: str, barrier, queue) -> None:
    import torch

    if device_name == "cpu":
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
    from prunegen.engine import pruning
    from prunegen.engine.models import build_model
    from prunegen.engine.seeds import generator
    from prunegen.engine.training import make_optimizer, train_epoch, use_channels_last
    from prunegen.study.hparams import Schedule, Train
    from prunegen.study.shapes import default_ignore

    case, device = CASES[name], torch.device(device_name)
    torch.manual_seed(rank)
    hp = Train(epochs=1, batch_size=BATCH, lr=0.1, momentum=0.9, weight_decay=1e-4,
               schedule=Schedule(kind="constant", milestones=(), gamma=1.0))
    model = build_model(case["model"], input_shape=case["shape"], num_classes=10).to(device)
    mask = {n: m.to(device) for n, m in pruning.full_mask(model, default_ignore(case["model"])).items()}
    channels_last = use_channels_last(model, device)  # as cell.run / training.train
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    bound = pruning.bind(model, mask)
    optimizer = make_optimizer(model, hp)
    model.train()

    def epoch(splits, tag) -> float:
        loss, _ = train_epoch(model, optimizer, bound, splits, hp, generator(rank, tag), 0,
                              channels_last=channels_last)
        return loss  # train_epoch counts its loss on the host: the device is done

    epoch(_splits(case, warmup, device, 1000 + rank), "warmup")
    splits = _splits(case, steps, device, rank)
    if device.type == "cuda":
        torch.cuda.synchronize()
    barrier.wait()
    t0 = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
    epoch(splits, "timed")
    if device.type == "cuda":
        torch.cuda.synchronize()
    queue.put({"rank": rank, "start": t0, "end": time.perf_counter()})


def run(name: str, k: int, steps: int, warmup: int, device: str) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, name, steps, warmup, device, barrier, queue)) for r in range(k)]
    for p in procs:
        p.start()
    out = [queue.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise SystemExit(f"{name} k={k}: a worker failed ({p.exitcode})")
    span = max(o["end"] for o in out) - min(o["start"] for o in out)
    images = steps * BATCH
    return {"k": k, "aggregate_img_s": k * images / span, "span_s": span,
            "per_process_img_s": [images / (o["end"] - o["start"]) for o in sorted(out, key=lambda o: o["rank"])]}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ks", default="1,2,4", help="processes sharing the device (default: %(default)s)")
    ap.add_argument("--cases", default=",".join(CASES), help="default: %(default)s")
    ap.add_argument("--steps", type=int, help="timed steps per process (default: per case and device)")
    ap.add_argument("--warmup", type=int, help="warm-up steps per process (default: steps / 5, at least 2)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="pack.json", help="file name in benchmarks/out (default: %(default)s)")
    args = ap.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    info = {"device": args.device, "cpus": os.cpu_count(), "torch": torch.__version__, "batch_size": BATCH,
            "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu, 1 thread per process"}
    results = {"info": info, "cases": {}}
    for name in args.cases.split(","):
        steps = args.steps or CASES[name]["steps"][args.device]
        warmup = args.warmup or max(2, steps // 5)
        rows = []
        for k in ks:
            reps = [run(name, k, steps, warmup, args.device) for _ in range(args.repeats)]
            agg = [r["aggregate_img_s"] for r in reps]
            rows.append({"k": k, "aggregate_img_s_median": statistics.median(agg), "aggregate_img_s_min": min(agg),
                         "aggregate_img_s_max": max(agg), "runs": reps})
        base = rows[0]["aggregate_img_s_median"] if ks[0] == 1 else None
        for r in rows:
            r["ratio_to_k1"] = r["aggregate_img_s_median"] / base if base else None
            ratio = f", x{r['ratio_to_k1']:.2f} of k=1" if base else ""
            print(f"{name:17s} k={r['k']}: {r['aggregate_img_s_median']:9.0f} img/s aggregate (min "
                  f"{r['aggregate_img_s_min']:.0f}, max {r['aggregate_img_s_max']:.0f}){ratio}; "
                  f"{steps} steps x {BATCH}, {args.repeats} runs, {args.device}", flush=True)
        results["cases"][name] = {"steps": steps, "warmup": warmup, "rows": rows}
    out = REPO / "benchmarks/out"
    out.mkdir(exist_ok=True)
    results["info"]["mps"] = bool(os.environ.get("CUDA_MPS_PIPE_DIRECTORY"))  # gpu.sh's MPS phase sets it
    (out / args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
