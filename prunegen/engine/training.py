"""The training loop: cycles of SGD with a restarted LR schedule, masks kept at zero,
checkpoints by elapsed time, at each cycle's end and at a stop signal (mid-epoch, at a step
boundary), and bit-identical resume on CPU.

Data order and augmentation come from a generator derived from (seed, cycle, epoch), so a
resumed run needs only the model, the optimizer and the history. The epoch's plan (its
order, every batch's crops and flips) is drawn on the CPU, whatever the device, and
uploaded once: a cell sees the same data on a GPU as on a CPU (`EpochPlan`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..study.hparams import Train
from . import folders, pruning, stopping
from .checkpoints import Checkpoint
from .data import crop_batch, draw_crops, normalisation, to_float
from .ranks import SINGLE, Ranks
from .seeds import generator
from .sgd import SGD
from .splits import Split, Splits

log = logging.getLogger("prunegen")


def lr_at(hp: Train, step: int, steps_per_epoch: int, constant: float | None = None) -> float:
    """LR at `step` of a cycle: optional linear warmup, then constant / step / cosine."""
    if constant is not None:
        return constant
    s = hp.schedule
    epoch = step / steps_per_epoch
    if s.warmup_epochs and epoch < s.warmup_epochs:
        # capped: with a warmup of a fractional number of steps the last one would overshoot
        return hp.lr * min(1.0, (step + 1) / (s.warmup_epochs * steps_per_epoch))
    frac = epoch / hp.epochs
    if s.kind == "step":
        return hp.lr * s.gamma ** sum(frac >= m for m in s.milestones)
    if s.kind == "cosine":
        return hp.lr * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
    return hp.lr


def make_optimizer(model: nn.Module, hp: Train) -> SGD:
    return SGD(model.parameters(), lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov,
               weight_decay=hp.weight_decay)


CPU_CHANNELS_LAST_MIN = 16  # narrowest conv (output channels) that runs channels_last on CPU


def use_channels_last(model: nn.Module, device: torch.device) -> bool:
    """Convolutional models run channels_last (NHWC) on CUDA, where cuDNN is faster in it,
    and on CPU when every conv has at least 16 output channels: oneDNN's NHWC kernels
    train a width-16 ResNet-20 about 1.3x faster there, but narrower convs (the
    downscaled arms' widths) are slower in NHWC, pathologically so on some CPUs
    (a width-4 ResNet-20 once took minutes per epoch against 5 s in NCHW)."""
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return False
    return device.type == "cuda" or min(convs) >= CPU_CHANNELS_LAST_MIN


def autocast(device: torch.device) -> torch.autocast | contextlib.nullcontext:
    """bf16 autocast on CUDA (weights, masks, gradients and the loss stay fp32); off
    elsewhere, so that CPU results are plain fp32 and bit-reproducible. Off is a no-op
    context: entering a disabled torch.autocast costs some 3 us, every step."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _inputs(x: torch.Tensor, splits: Splits, channels_last: bool) -> torch.Tensor:
    x = to_float(x, splits.mean, splits.std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, splits: Splits, batch_size: int, channels_last: bool = False,
             ranks: Ranks = SINGLE) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
    """Per-example loss (against split.y) and predicted class, in large no-grad batches, in
    fp32 on every device (the per-example records and memorization come from these
    logits: never from bf16 ones). Data-parallel, every rank calls it: rank r evaluates
    batches r, r + N, ... of one process's batches with rank 0's model, and rank 0 gets
    them all in order (the others (None, None)): the bits rank 0 alone would compute."""
    ranks.same_buffers(model)
    model.eval()
    parts = []
    for k, x in _eval_batches(split, batch_size, ranks):
        out = model(_inputs(x, splits, channels_last)).float()
        y = split.y[k * batch_size:k * batch_size + len(x)]
        parts.append((F.cross_entropy(out, y, reduction="none"), out.argmax(1)))
    model.train()
    if ranks.world > 1:
        shares = ranks.gather([(loss.cpu(), pred.cpu()) for loss, pred in parts])
        if shares is None:
            return None, None
        parts = [shares[k % ranks.world][k // ranks.world] for k in range(sum(map(len, shares)))]
    if not parts:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat([loss for loss, _ in parts]).cpu(), torch.cat([pred for _, pred in parts]).cpu()


def _eval_batches(split: Split, batch_size: int, ranks: Ranks = SINGLE):
    """This rank's evaluation batches of the split's uint8 images (`Ranks.batches`), as (batch
    number, images): slices of the tensor, or decoded from files."""
    numbers = ranks.batches(len(split), batch_size)
    if not isinstance(split.x, torch.Tensor):
        return zip(numbers, folders.eval_batches(split.x, batch_size, numbers))
    return ((k, split.x[k * batch_size:(k + 1) * batch_size]) for k in numbers)


def _train_batches(split: Split, plan: EpochPlan, bs: int, first: int, augment: bool, flip: bool,
                   g: torch.Generator, ranks: Ranks = SINGLE):
    """This rank's share of each of the epoch's uint8 training batches from step `first` on, in the
    plan's order: gathered (and cropped) from the tensor on its device, or decoded from files by
    DataLoader workers, each example cropped and flipped from its own (epoch seed, index) stream
    (engine/folders.py), so that the crops do not depend on the ranks either."""
    if not isinstance(split.x, torch.Tensor):
        yield from folders.train_batches(split.x, split.index, plan.perm, bs, first, g.initial_seed(),
                                         augment, flip, shard=ranks.shard)
        return
    n = len(split)
    for i in range(first, math.ceil(n / bs)):
        lo, hi = ranks.shard(min(bs, n - i * bs))
        x = split.x.index_select(0, plan.perm[i * bs + lo:i * bs + hi])  # the rows of x[idx], in a third of the time
        if augment:
            rows = slice(i * bs + lo, i * bs + hi)
            x = crop_batch(x, plan.oy[rows], plan.ox[rows], None if plan.flipped is None else plan.flipped[rows])
        yield x


def _mean_metrics(model, split, splits, hp, channels_last, ranks: Ranks = SINGLE) -> tuple[float, float]:
    """Mean loss and accuracy; NaN on a rank other than 0 (it sends its share to rank 0)."""
    if len(split) == 0:
        return float("nan"), float("nan")
    loss, pred = evaluate(model, split, splits, hp.eval_batch_size, channels_last, ranks)
    if loss is None:
        return float("nan"), float("nan")
    return float(loss.mean()), float((pred == split.y.cpu()).float().mean())


@dataclass(frozen=True)
class EpochPlan:
    """What an epoch's data is: the order of the training examples and, with augmentation,
    every example's crop offsets and flip, in batch order. Drawn on the CPU from the
    epoch's generator in one fixed order (the order, then each batch's crops and flips),
    the order the loop drew them in before plans existed: CPU records are unchanged."""

    perm: torch.Tensor               # (N,) int64
    oy: torch.Tensor | None = None   # (N, 1) crop offsets, in batch order
    ox: torch.Tensor | None = None
    flipped: torch.Tensor | None = None  # (N, 1) bool, or None without flips

    @classmethod
    def draw(cls, g: torch.Generator, n: int, batch_size: int, augment: bool, flip: bool) -> "EpochPlan":
        if g.device.type != "cpu":
            raise ValueError("an epoch's plan is drawn on the CPU: give a CPU generator")
        perm = torch.randperm(n, generator=g)
        if not augment:
            return cls(perm)
        crops = [draw_crops(len(perm[i:i + batch_size]), g, flip=flip) for i in range(0, n, batch_size)]
        oy, ox, fl = zip(*crops) if crops else ((), (), ())
        cat = lambda parts: torch.cat(parts) if parts else torch.empty(0, 1, dtype=torch.int64)  # noqa: E731
        return cls(perm, cat(oy), cat(ox), torch.cat(fl) if flip and fl else None)

    def to(self, device: torch.device) -> "EpochPlan":
        """Uploaded once an epoch (not a small copy every step)."""
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return EpochPlan(move(self.perm), move(self.oy), move(self.ox), move(self.flipped))


@dataclass(frozen=True)
class Partial:
    """An epoch stopped at a step boundary: the steps done, their losses (fp32, in step
    order) and correct predictions. With the model and optimizer at that step, what the
    rest of the epoch needs to end with the bits of an epoch never stopped."""

    step: int
    losses: torch.Tensor  # (step,) float32, on the CPU
    correct: int

    def state(self) -> dict:
        return {"step": self.step, "losses": self.losses, "correct": self.correct}

    @classmethod
    def from_state(cls, state: dict | None) -> "Partial | None":
        return None if state is None else cls(int(state["step"]), state["losses"], int(state["correct"]))


def train_epoch(model: nn.Module, optimizer: SGD, bound: pruning.Bound, splits: Splits, hp: Train,
                g: torch.Generator, epoch: int, lr_constant: float | None = None,
                channels_last: bool = False, resume: Partial | None = None,
                ranks: Ranks = SINGLE) -> tuple[float, int] | Partial:
    """One pass over the training split in the order drawn from `g` (a CPU generator: the
    epoch's plan); returns the summed loss and the number of correct predictions (on the
    labels trained on). `resume`: the part of this epoch already done. Asked to stop
    (engine.stopping) before its last step, it returns the epoch so far, a `Partial`.
    `ranks`: of a data-parallel cell, this rank trains its share of each global batch
    (engine.ranks; `model` is then the DDP module) and the counts are summed over ranks."""
    device = splits.train.x.device
    n, bs = len(splits.train), hp.batch_size
    steps = math.ceil(n / bs)
    in_memory = isinstance(splits.train.x, torch.Tensor)  # else streamed: each example augmented where decoded
    plan = EpochPlan.draw(g, n, bs, splits.augment and in_memory, splits.flip).to(device)
    perm = plan.perm
    labels = splits.train.y.index_select(0, perm)  # the epoch's labels in batch order, in one gather
    mean, std = normalisation(splits.mean, splits.std, device)
    # Every batch is normalised into this one tensor (a fresh one per step made an LeNet
    # step on CPU 5% slower); a step overwrites it only after the previous step's
    # backward pass, the last to read it, has run.
    inputs = torch.empty((bs, *splits.train.x.shape[1:]), device=device,
                         memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    # Losses and outputs are kept and counted after the epoch: a running total on the
    # device cost six small ops a step (3% of an LeNet step on CPU).
    losses, outputs, targets = [], [], []
    first = resume.step if resume is not None else 0
    stop_at = steps
    batches = _train_batches(splits.train, plan, bs, first, splits.augment, splits.flip, g, ranks)
    for i in range(first, steps):
        size = min(bs, n - i * bs)  # the global batch
        lo, hi = ranks.shard(size)  # this rank's rows of it (all of them with one rank)
        x = next(batches)
        x = to_float(x, mean, std, out=inputs[:len(x)])
        y = labels[i * bs + lo:i * bs + hi]
        for group in optimizer.param_groups:
            group["lr"] = lr_at(hp, epoch * steps + i, steps, lr_constant)
        with autocast(device):
            out = model(x)
            loss = ranks.loss(out.float(), y, size)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        pruning.mask_grads(bound)
        optimizer.step()
        losses.append(loss.detach())
        outputs.append(out.detach())
        if ranks.world > 1:
            targets.append(y)
        if i + 1 < steps and agreed_stop(ranks):  # one flag read a step (and one all-reduce with ranks)
            stop_at = i + 1
            break
    batches.close()  # a streamed epoch stopped early: its DataLoader workers end here
    done = (resume.losses,) if resume is not None else ()
    new_losses = torch.stack(losses).float().cpu() if losses else torch.zeros(0)
    trained = torch.cat(targets) if ranks.world > 1 else labels[first * bs:stop_at * bs]
    new_correct = int((torch.cat(outputs).argmax(1) == trained).sum()) if outputs else 0
    if ranks.world > 1:  # the global batches' mean losses and correct predictions, from every rank's share
        new_losses = ranks.total(new_losses) / ranks.world
        new_correct = int(ranks.total(torch.tensor([new_correct])))
    step_losses = torch.cat([*done, new_losses])
    correct = (resume.correct if resume is not None else 0) + new_correct
    if stop_at < steps:
        return Partial(stop_at, step_losses, correct)
    # Summed in step order in fp32, as a running total on the device was: the same bits.
    loss_sum = np.float32(0)
    for j, loss in enumerate(step_losses.numpy()):
        loss_sum += loss * np.float32(min(bs, n - j * bs))
    return float(loss_sum), correct


def agreed_stop(ranks: Ranks) -> int | None:
    """The stop signal, if any, agreed by all ranks (engine.ranks): a rank that was not
    signalled itself takes the others' signal, so that every rank stops at this step."""
    asked = ranks.stop(stopping.requested())
    if asked is not None and stopping.requested() is None:
        stopping.ask(asked)
    return asked


def train(model: nn.Module, mask: pruning.Mask, splits: Splits, hp: Train, *, cycles: list[int],
          seed: int, checkpoint: Checkpoint, label: str = "", lr_constant: float | None = None,
          on_epoch: Callable[[int, int, nn.Module], None] | None = None,
          first_epoch: int = 0, ranks: Ranks = SINGLE) -> tuple[list[dict], dict]:
    """Train `model` for the chain cycles `cycles` (LR and optimizer restarted each cycle),
    each from epoch `first_epoch` of the schedule to its end (weight rewinding starts past 0).

    Returns the per-epoch history and resume information. `on_epoch(cycle, epoch, model)`
    is called after each completed epoch (and with `first_epoch` before training).

    `ranks`: a data-parallel cell's (engine.ranks): every rank trains its share of each
    global batch, evaluates a share of each split and loads the checkpoint; rank 0 alone
    calls `on_epoch` and saves the checkpoint (the others' history rows have no evaluation).
    """
    device = splits.train.x.device
    channels_last = use_channels_last(model, device)
    n, bs = len(splits.train), hp.batch_size
    steps = math.ceil(n / bs)
    history: list[dict] = []
    start_cycle, start_epoch = 0, first_epoch
    optimizer = make_optimizer(model, hp)
    resumed, partial = None, None
    state = checkpoint.load()
    if state is not None:
        model.load_state_dict(state["model"])
        start_cycle, start_epoch, history = state["cycle_pos"], state["epoch"], list(state["history"])
        partial = Partial.from_state(state.get("partial"))
        if start_epoch < hp.epochs:
            optimizer.load_state_dict(state["optimizer"])
        resumed = {"cycle": cycles[start_cycle] if start_cycle < len(cycles) else None, "epoch": start_epoch}
        if partial is not None:
            resumed["step"] = partial.step
        log.info("%s: resuming from checkpoint at cycle %s epoch %d%s", label, resumed["cycle"], start_epoch,
                 f" step {partial.step}" if partial else "")
    bound = pruning.bind(model, mask)
    pruning.apply_mask(bound, optimizer)
    if not ranks.main:  # rank 0 writes the checkpoint and the rewind point
        checkpoint, on_epoch = _NoCheckpoint(checkpoint.path, checkpoint.fingerprint), None
    if state is None and on_epoch is not None and cycles:
        on_epoch(cycles[0], first_epoch, model)
    model.train()
    net = ranks.wrap(model)  # (DDP over the model with ranks; the model itself without)

    for pos in range(start_cycle, len(cycles)):
        cycle = cycles[pos]
        begin = start_epoch if pos == start_cycle else first_epoch
        if begin >= hp.epochs:
            continue
        if begin == first_epoch and partial is None:  # (a whole-epoch checkpoint is past it)
            optimizer = make_optimizer(model, hp)  # LR rewinding: a fresh schedule and momentum
        for epoch in range(begin, hp.epochs):
            t0 = time.perf_counter()
            lr0 = lr_at(hp, epoch * steps, steps, lr_constant)
            done = train_epoch(net, optimizer, bound, splits, hp, generator(seed, "batches", cycle, epoch),
                               epoch, lr_constant, channels_last, resume=partial, ranks=ranks)
            partial = None
            if isinstance(done, Partial):  # asked to stop: save this step, then stop
                checkpoint.save(model=model.state_dict(), optimizer=optimizer.state_dict(),
                                cycle_pos=pos, epoch=epoch, history=history, partial=done.state())
                raise stopping.StopRequested(stopping.requested(),
                                             f"at cycle {cycle} epoch {epoch + 1} step {done.step} of {steps}")
            loss_sum, correct = done
            # (every rank evaluates a share; rank 0's history, with the means, is the cell's)
            val_loss, val_acc = _mean_metrics(model, splits.val, splits, hp, channels_last, ranks)
            test_loss, test_acc = _mean_metrics(model, splits.test, splits, hp, channels_last, ranks)
            row = {"cycle": cycle, "epoch": epoch + 1, "lr": lr0,
                   "train_loss": loss_sum / n, "train_acc": correct / n,
                   "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
                   "seconds": time.perf_counter() - t0}
            history.append(row)
            log.info("%s | cycle %d epoch %d/%d lr %.4g | train loss %.4f acc %.4f | val acc %.4f | test acc %.4f | %.2fs",
                     label, cycle, epoch + 1, hp.epochs, lr0, row["train_loss"], row["train_acc"],
                     val_acc, test_acc, row["seconds"])
            if on_epoch is not None:
                on_epoch(cycle, epoch + 1, model)
            asked = agreed_stop(ranks)
            if asked is not None or checkpoint.due(cycle_end=epoch + 1 == hp.epochs):
                checkpoint.save(model=model.state_dict(), optimizer=optimizer.state_dict(),
                                cycle_pos=pos, epoch=epoch + 1, history=history)
            if asked is not None:
                raise stopping.StopRequested(asked, f"after cycle {cycle} epoch {epoch + 1}")
    return history, {"resumed_from": resumed}


class _NoCheckpoint(Checkpoint):
    """What a rank other than 0 saves: nothing (rank 0's checkpoint is the cell's)."""

    def save(self, **state) -> None:
        pass
