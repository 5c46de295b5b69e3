"""A data-parallel cell: the ranks of one cell, as torch.distributed sees them.

A cell of `resources.tasks` x `resources.nodes` > 1 runs as that many processes (ranks),
started by prunegen.cluster.ranks (submitit's multi-task jobs, locally or on SLURM), which
export torch's env:// variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
Here: the process group from them (NCCL for CUDA tensors, gloo for CPU ones), each rank's
share of a step's GLOBAL batch, the loss scale that makes N ranks compute what one process
computes with the same global batch, one agreed stop, and rank 0's word to the others.

What holds (docs/design.md, "Data-parallel cells"):
- every rank draws the same epoch plan (order, crops, flips) and trains on its contiguous
  share of each global batch (`shard`); gradients are summed across ranks by torch's
  DistributedDataParallel during the backward pass, then masked, then the SGD step: the
  replicas stay equal and masked weights stay exactly zero after every step;
- BatchNorm is per replica, as OpenLTH does it (DDP, no SyncBatchNorm): batch statistics
  of the rank's share; running statistics are rank 0's (DDP broadcasts them each step);
- every rank evaluates every world-th batch of the batches one process evaluates, with
  rank 0's model (its BatchNorm statistics sent to all first), and rank 0 gathers them: an
  example's numbers are the bits rank 0 alone would compute (`batches`, `same_buffers`,
  `gather`);
- rank 0 alone holds the cell's lock, writes the checkpoint and the records;
- a stop signal (USR2, TERM) may reach ranks at different steps: every step they agree on
  it (one all-reduce MAX of a CPU flag over gloo: no GPU sync), so all stop at one step.
"""

from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

TIMEOUT = datetime.timedelta(minutes=30)  # a collective waiting this long fails (rank 0 saves and writes alone)


class RanksError(RuntimeError):
    """The ranks of a cell disagree (world size, a rank's outcome); the message says which."""


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: holds the lock, gathers the evaluations, writes the checkpoint and the records."""
        return self.rank == 0

    def batches(self, n: int, batch_size: int) -> range:
        """The numbers of the evaluation batches this rank takes of a split of `n` examples in
        batches of `batch_size`: every world-th from its rank. The batches are one process's,
        so each example is evaluated in the batch it would be in (the same bits)."""
        return range(self.rank, math.ceil(n / batch_size), self.world)

    def shard(self, size: int) -> tuple[int, int]:
        """This rank's rows [lo, hi) of a global batch of `size` examples: contiguous
        near-equal shares (torch.tensor_split's), the first ranks one longer."""
        q, r = divmod(size, self.world)
        lo = self.rank * q + min(self.rank, r)
        return lo, lo + q + (self.rank < r)

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: its local GPU on CUDA (LOCAL_RANK of the node's GPUs)."""
        if device.type != "cuda" or self.world == 1:
            return device
        dev = torch.device("cuda", self.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
        return dev

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the training step calls: DDP over `model` with more than one rank
        (it sums gradients during backward, in buckets), else `model` itself."""
        if self.world == 1:
            return model
        return nn.parallel.DistributedDataParallel(model)  # (its default: rank 0's buffers, every forward)

    def loss(self, out: torch.Tensor, y: torch.Tensor, global_size: int) -> torch.Tensor:
        """The step's loss as this rank backpropagates it: the mean over the global batch
        of `global_size` examples. One rank: the mean (the bits of before). N ranks: the
        sum over its share / global_size, times N, since DDP divides the summed gradient
        by N: the gradient is then the one process's with the same global batch, the last,
        smaller batch included."""
        if self.world == 1:
            return nn.functional.cross_entropy(out, y)
        return nn.functional.cross_entropy(out, y, reduction="sum") * (self.world / global_size)

    def stop(self, asked: int | None) -> int | None:
        """The stop signal agreed by all ranks: the largest any rank was asked with (one
        all-reduce of a CPU number over gloo), or None. Every rank must call it at the
        same step."""
        if self.world == 1:
            return asked
        flag = torch.tensor([asked or 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=_cpu_group())
        return int(flag) or None

    def total(self, t: torch.Tensor) -> torch.Tensor:
        """`t` summed over the ranks (a CPU tensor, over gloo); itself with one rank."""
        if self.world == 1:
            return t
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=_cpu_group())
        return t

    def same_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm's running statistics) on every rank: after a training
        step each replica's hold its own share's update (DDP sends rank 0's only before the
        next forward), and evaluation must be of rank 0's model."""
        if self.world == 1:
            return
        for b in model.buffers():
            dist.broadcast(b, src=0)

    def gather(self, obj: Any) -> list | None:
        """Every rank's `obj` (picklable; CPU tensors), in rank order, on rank 0; None elsewhere."""
        if self.world == 1:
            return [obj]
        box = [None] * self.world if self.main else None
        dist.gather_object(obj, box, dst=0, group=_cpu_group())
        return box

    def tell(self, obj: Any) -> Any:
        """Rank 0's `obj`, on every rank (a picklable object, over gloo)."""
        if self.world == 1:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0, group=_cpu_group())
        return box[0]


SINGLE = Ranks()
_current = SINGLE
_cpu: Any = None


def from_env() -> Ranks:
    """The ranks torch's env:// variables describe (one process without them)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not 0 <= rank < world:
        raise RanksError(f"RANK={rank} outside WORLD_SIZE={world}")
    return Ranks(rank, world, local)


def join() -> Ranks:
    """Join the process group the environment names (once per process), and remember it
    as this process's `current()` ranks. Backends: NCCL for CUDA tensors where CUDA is,
    gloo for CPU tensors always (the stop flag, the counts, rank 0's word)."""
    global _current, _cpu
    ranks = from_env()
    if ranks.world > 1 and not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
        _cpu = dist.new_group(backend="gloo", timeout=TIMEOUT) if torch.cuda.is_available() else dist.group.WORLD
    _current = ranks
    return ranks


def current() -> Ranks:
    """The ranks this process joined (`join`), or one process."""
    return _current


def leave() -> None:
    """Leave the process group (at the end of the process's cell)."""
    global _current, _cpu
    if dist.is_initialized():
        dist.destroy_process_group()
    _current, _cpu = SINGLE, None


def _cpu_group():
    return _cpu if _cpu is not None else dist.group.WORLD
