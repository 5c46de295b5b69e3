"""The engine's training epoch against an OpenLTH-style reference loop, same process.

Reference (what OpenLTH does): torchvision's own dataset object (MNIST or CIFAR10),
which hands out PIL images, per-sample PIL transforms (random crop with 4 pixels of
padding and horizontal flip for CIFAR; none for MNIST), ``ToTensor`` + ``Normalize``, a
``DataLoader`` with default workers (0) and shuffling, an NCHW fp32 model whose masks
are applied before every forward pass, and ``torch.optim.SGD``; the model's layers and
forward passes are OpenLTH's (``nn.Linear``, ReLUs that allocate their output).

Engine: ``prunegen.training.train_epoch`` on the same model architecture, optimizer
settings, batch size and number of steps, with the data as uint8 tensors on the device
(augmentation as tensor ops, see prunegen/data.py), and its own kernel choices
(channels_last convolutions, an MLP as one autograd node with its big products in
oneDNN: prunegen/kernels.py, ReLUs and residual adds in place).

Each repeat times one epoch of each, alternating which goes first; the figure is the
median over repeats of reference time / engine time (and min/max). Synthetic pixels:
speed does not depend on what the images show.

With --processes, a second figure runs the same two loops each in a process of its own,
one epoch at a time, alternated: the engine's process set up as `prunegen run-cell` sets
up a cell job (it keeps the memory it frees: prunegen/allocator.py), the reference's with
the C library's defaults. One shared process cannot show a process-wide setting; but
short epochs (LeNet's, under 0.1 s) come out slower in a process that has waited for
another than back to back in one process, so this figure is for the conv nets.

A third loop, the compute floor, runs only the engine's model and optimizer (same
memory format, one fixed batch already normalised on the device, no data path, no
masks): reference / floor is the best ratio any data path could reach with these
kernels, and the engine's GFLOP/s (FLOPs of one step counted by
``torch.utils.flop_counter``) says how close the kernels themselves run to the machine.

    .venv/bin/python benchmarks/train.py                    # CPU cases
    .venv/bin/python benchmarks/train.py --processes        # + each loop in its own process
    .venv/bin/python benchmarks/train.py --device cuda      # + VGG-16, on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from prunegen.engine import allocator, models, pruning
from prunegen.engine.data import Dataset, to_float
from prunegen.engine.seeds import generator
from prunegen.engine.splits import make_splits
from prunegen.engine.training import make_optimizer, train_epoch, use_channels_last
from prunegen.study import shapes
from prunegen.study.hparams import Schedule, Train

REPO = Path(__file__).resolve().parents[1]

# name: (model spec, (C, H, W), mean, std, augment, momentum, weight decay)
CASES = {
    "lenet300-mnist": ({"name": "mlp", "hidden": [300, 100]}, (1, 28, 28), (33.32,), (78.57,), False, 0.0, 0.0),
    "resnet20-cifar10": ({"name": "resnet20"}, (3, 32, 32), (125.3, 123.0, 113.9), (63.0, 62.1, 66.7), True, 0.9, 1e-4),
    "vgg16-cifar10": ({"name": "vgg16"}, (3, 32, 32), (125.3, 123.0, 113.9), (63.0, 62.1, 66.7), True, 0.9, 1e-4),
}


def synthetic(shape, n: int, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


class _OpenLTHMLP(models.MLP):
    def forward(self, x):  # OpenLTH's mnist_lenet Model.forward: a module call per layer
        x = x.view(x.size(0), -1)
        for i in range(self.num_hidden):
            x = F.relu(getattr(self, f"fc{i + 1}")(x))
        return self.output(x)


class _OpenLTHBlock(models.BasicBlock):
    def forward(self, x):  # OpenLTH's cifar_resnet Block.forward
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class _OpenLTHResNet(models.CifarResNet):
    def forward(self, x):
        out = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(out.mean(dim=(2, 3)))


def openlth(model: torch.nn.Module) -> torch.nn.Module:
    """The same model (parameters, values) with OpenLTH's forward passes: a Linear and a
    ReLU module call per layer (MKL's products on CPU), ReLUs that allocate their output,
    where prunegen runs an MLP as one node in oneDNN and its ReLUs in place."""
    as_openlth = {models.MLP: _OpenLTHMLP, models.BasicBlock: _OpenLTHBlock, models.CifarResNet: _OpenLTHResNet}
    for m in model.modules():
        if type(m) in as_openlth:
            m.__class__ = as_openlth[type(m)]  # same attributes, OpenLTH's forward
        elif isinstance(m, torch.nn.ReLU):
            m.inplace = False
    return model


def torchvision_dataset(x: torch.Tensor, y: torch.Tensor, transform) -> torch.utils.data.Dataset:
    """torchvision's own MNIST or CIFAR10 object holding the synthetic images as it holds
    the files it reads (a uint8 tensor of rows and a tensor of labels; a numpy HWC array
    and a list), so that the reference runs its __getitem__: image -> PIL -> transform."""
    from torchvision import datasets

    if x.shape[1] == 1:
        ds = datasets.MNIST.__new__(datasets.MNIST)  # not __init__: it reads the files from disk
        ds.data, ds.targets = x[:, 0].clone(), y.clone()
    else:
        ds = datasets.CIFAR10.__new__(datasets.CIFAR10)
        ds.data, ds.targets = x.permute(0, 2, 3, 1).numpy().copy(), y.tolist()
    ds.transform, ds.target_transform = transform, None
    return ds


class Reference:
    """OpenLTH's loop: DataLoader over PIL transforms, masks applied before every forward."""

    def __init__(self, case: str, x, y, batch_size: int, device: torch.device):
        import torchvision.transforms as T

        spec, shape, mean, std, augment, momentum, wd = CASES[case]
        tf = [T.RandomCrop(shape[-1], padding=4), T.RandomHorizontalFlip()] if augment else []
        tf += [T.ToTensor(), T.Normalize([m / 255 for m in mean], [s / 255 for s in std])]
        self.loader = torch.utils.data.DataLoader(torchvision_dataset(x, y, T.Compose(tf)), batch_size=batch_size,
                                                  shuffle=True, generator=torch.Generator().manual_seed(1))
        torch.manual_seed(0)
        self.model = openlth(models.build_model(spec, input_shape=shape, num_classes=10).to(device))
        self.mask = pruning.full_mask(self.model, shapes.default_ignore(spec))
        self.mask = {n: m.to(device) for n, m in self.mask.items()}
        self.params = dict(self.model.named_parameters())
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=momentum, weight_decay=wd)
        self.device = device

    def epoch(self) -> None:
        self.model.train()
        for x, y in self.loader:
            x, y = x.to(self.device), y.to(self.device)
            with torch.no_grad():
                for n, m in self.mask.items():  # OpenLTH PrunedModel.forward: weights *= mask
                    self.params[n].mul_(m)
            loss = F.cross_entropy(self.model(x), y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        _sync(self.device)


class Engine:
    def __init__(self, case: str, x, y, batch_size: int, device: torch.device):
        spec, shape, mean, std, augment, momentum, wd = CASES[case]
        ds = Dataset(case, x, y, x[:batch_size].clone(), y[:batch_size].clone(), 10, mean, std, augment)
        self.splits = make_splits(ds, val_size=0, noise=0.0, noise_mode="other_class", seed=0, augment=augment,
                                  device=device)
        self.hp = Train(epochs=1, batch_size=batch_size, lr=0.1, momentum=momentum, weight_decay=wd,
                        schedule=Schedule(kind="constant"))
        torch.manual_seed(0)
        self.model = models.build_model(spec, input_shape=shape, num_classes=10).to(device)
        self.channels_last = use_channels_last(self.model, device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        mask = pruning.full_mask(self.model, shapes.default_ignore(spec))
        self.bound = pruning.bind(self.model, {n: m.to(device) for n, m in mask.items()})
        self.opt = make_optimizer(self.model, self.hp)
        self.device, self.calls = device, 0

    def epoch(self) -> None:
        self.model.train()
        g = generator(0, "batches", 0, self.calls)  # the epoch plan is drawn on the CPU
        self.calls += 1
        train_epoch(self.model, self.opt, self.bound, self.splits, self.hp, g, 0, channels_last=self.channels_last)
        _sync(self.device)


class Floor(Engine):
    """The engine's model and optimizer on one fixed, normalised batch: kernels only."""

    def __init__(self, case: str, x, y, batch_size: int, device: torch.device):
        super().__init__(case, x, y, batch_size, device)
        self.steps = -(-len(x) // batch_size)
        xb = to_float(self.splits.train.x[:batch_size], self.splits.mean, self.splits.std)
        self.x = xb.contiguous(memory_format=torch.channels_last) if self.channels_last else xb
        self.y = self.splits.train.y[:batch_size]

    def step(self) -> None:
        loss = F.cross_entropy(self.model(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def epoch(self) -> None:
        self.model.train()
        for _ in range(self.steps):
            self.step()
        _sync(self.device)

    def flops_per_step(self) -> int:
        from torch.utils.flop_counter import FlopCounterMode

        # The same products in torch's own ops, which the counter knows (it does not know oneDNN's).
        model = openlth(copy.deepcopy(self.model))
        with FlopCounterMode(display=False) as counter:
            F.cross_entropy(model(self.x), self.y).backward()
        return counter.get_total_flops()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _alternated(epochs: dict, repeats: int) -> dict[str, list[float]]:
    """Each repeat times one epoch of each (`epochs`: name -> a call that runs one and
    returns its seconds), the order reversed every other repeat."""
    times = {k: [] for k in epochs}
    for i in range(repeats):
        for k in (list(epochs) if i % 2 == 0 else list(epochs)[::-1]):
            times[k].append(epochs[k]())
    return times


def _worker(case: str, steps: int, batch_size: int, device: str, kind: str, conn) -> None:
    """One loop in a process of its own, set up as it runs: the engine as `prunegen
    run-cell` sets up a cell job (prunegen/allocator.py), the reference with the C
    library's defaults. Times an epoch whenever told to."""
    if kind == "engine":
        allocator.keep_freed_memory()
    x, y = synthetic(CASES[case][1], steps * batch_size)
    loop = {"reference": Reference, "engine": Engine}[kind](case, x, y, batch_size, torch.device(device))
    loop.epoch()  # warm-up
    conn.send(None)
    while conn.recv():
        t0 = time.perf_counter()
        loop.epoch()
        conn.send(time.perf_counter() - t0)


def measure_processes(case: str, steps: int, batch_size: int, repeats: int, device: torch.device) -> list[float]:
    """Reference / engine epoch-time ratios with each loop in a process of its own, one
    epoch at a time, alternated: what a process-wide setting (the cell job's allocator)
    is worth, which one shared process cannot show."""
    ctx = multiprocessing.get_context("spawn")
    conns = {}
    for kind in ("reference", "engine"):
        here, there = ctx.Pipe()
        ctx.Process(target=_worker, args=(case, steps, batch_size, str(device), kind, there), daemon=True).start()
        conns[kind] = here
    for conn in conns.values():
        conn.recv()  # both warmed up

    def epoch(conn) -> float:
        conn.send(True)
        return conn.recv()

    times = _alternated({k: lambda conn=conn: epoch(conn) for k, conn in conns.items()}, repeats)
    for conn in conns.values():
        conn.send(False)
    return [r / e for r, e in zip(times["reference"], times["engine"])]


def measure(case: str, steps: int, batch_size: int, repeats: int, device: torch.device) -> dict:
    x, y = synthetic(CASES[case][1], steps * batch_size)
    runs = {"reference": Reference(case, x, y, batch_size, device), "engine": Engine(case, x, y, batch_size, device),
            "floor": Floor(case, x, y, batch_size, device)}
    for r in runs.values():  # warm-up: allocator, kernels, first-call costs
        r.epoch()

    def epoch(run) -> float:
        t0 = time.perf_counter()
        run.epoch()
        return time.perf_counter() - t0

    times = _alternated({k: lambda run=run: epoch(run) for k, run in runs.items()}, repeats)
    ratios = [r / e for r, e in zip(times["reference"], times["engine"])]
    ceiling = [r / f for r, f in zip(times["reference"], times["floor"])]
    gflop = runs["floor"].flops_per_step() * steps / 1e9
    out = {"case": case, "device": str(device), "steps": steps, "batch_size": batch_size, "repeats": repeats,
           "threads": torch.get_num_threads(),
           "reference_s": statistics.median(times["reference"]), "engine_s": statistics.median(times["engine"]),
           "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
           "floor_s": statistics.median(times["floor"]), "ceiling_ratio_median": statistics.median(ceiling),
           "gflop_per_epoch": gflop, "engine_gflops": gflop / statistics.median(times["engine"]),
           "channels_last": runs["engine"].channels_last,
           "reference_runs_s": times["reference"], "engine_runs_s": times["engine"], "floor_runs_s": times["floor"]}
    if device.type == "cuda":
        out["device_name"] = torch.cuda.get_device_name(device)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cases", nargs="*", help="default: the CPU cases, or all on CUDA")
    p.add_argument("--steps", type=int, help="steps per epoch (default: per case)")
    p.add_argument("--processes", action="store_true",
                   help="also measure with each loop in a process of its own, set up as it runs")
    args = p.parse_args()
    device = torch.device(args.device)
    default_steps = {"lenet300-mnist": 100, "resnet20-cifar10": 20, "vgg16-cifar10": 10} if device.type == "cpu" \
        else {"lenet300-mnist": 430, "resnet20-cifar10": 390, "vgg16-cifar10": 390}
    cases = args.cases or (["lenet300-mnist", "resnet20-cifar10"] + (["vgg16-cifar10"] if device.type == "cuda" else []))
    results = []
    for case in cases:
        steps = args.steps or default_steps[case]
        r = measure(case, steps, 128, args.repeats, device)
        results.append(r)
        print(f"{case:17s} {r['device']}: engine {r['engine_s']:.3f} s vs reference {r['reference_s']:.3f} s per "
              f"{r['steps']}-step epoch -> {r['ratio_median']:.2f}x (min {r['ratio_min']:.2f}, max {r['ratio_max']:.2f}, "
              f"{r['repeats']} repeats, {r['threads']} threads)\n{'':17s} compute floor {r['floor_s']:.3f} s "
              f"(reference / floor {r['ceiling_ratio_median']:.2f}x: the most any data path could give); engine "
              f"{r['engine_gflops']:.0f} GFLOP/s, {'channels_last' if r['channels_last'] else 'NCHW'}", flush=True)
        if args.processes:
            ratios = measure_processes(case, steps, 128, args.repeats, device)
            r.update(process_ratio_median=statistics.median(ratios), process_ratio_min=min(ratios),
                     process_ratio_max=max(ratios), process_ratios=ratios)
            print(f"{'':17s} each in its own process, the engine's set up as a cell job's (allocator): "
                  f"{r['process_ratio_median']:.2f}x (min {r['process_ratio_min']:.2f}, max {r['process_ratio_max']:.2f})",
                  flush=True)
    out = REPO / "benchmarks/out"
    out.mkdir(exist_ok=True)
    path = out / f"train-{device.type}.json"
    # Cases measured by an earlier run (e.g. `--cases` one at a time) are kept, newest wins.
    earlier = [r for r in (json.loads(path.read_text()) if path.exists() else []) if r["case"] not in cases]
    path.write_text(json.dumps(earlier + results, indent=2) + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
