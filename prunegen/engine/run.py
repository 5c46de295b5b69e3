"""Run one cell of a study end to end and write its records: the recipe, top to bottom.

    check its own records (complete: skip) and its parents' -> load the data and its
    splits (TIE: less the examples it removes) -> build its start (STARTS, by base) ->
    train its cycles (prunegen.engine.training) -> evaluate every example -> write the
    records, then cell.json last (prunegen.records)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..records import layout, provenance, schemas, store
from ..records.lock import CellLock
from ..study import chains
from ..study.arm_specs import CHAIN_ARMS, TIE_BASES
from ..study.grid import Cell, Study
from . import arms, controls, factories, pruning, ranks, tie
from .checkpoints import Checkpoint, save_torch
from .data import load_dataset
from .parents import check_parent, parent_history, read_parent
from .splits import Splits, make_splits
from .start import Start
from .training import evaluate, train, use_channels_last

# base -> how a cell of it builds the model and mask it starts from
STARTS = {**arms.STARTS, **controls.STARTS}

log = logging.getLogger("prunegen")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("study asks for device: cuda, but no CUDA device is visible")
    return torch.device(name)


def set_determinism(device: torch.device, deterministic: bool) -> str:
    """CUDA's deterministic algorithms on (or off, as the study says), and the precision the
    cell trains in: fp32 on CPU, whose ops are deterministic at a fixed thread count; bf16
    autocast for training on CUDA (evaluation stays fp32). cuBLAS needs its workspace
    setting before its first call, so this runs before the cell touches the device."""
    if device.type != "cuda":
        return "fp32"
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic)
    return "bf16-autocast"


def _data_record(bm, dataset, data_root) -> dict:
    """The normalisation the cell used and, for a researcher's npz, the file's sha256 (the
    definition is hashed, the bytes are recorded: a changed file shows in cell.json)."""
    out = {"mean": list(dataset.mean), "std": list(dataset.std)}
    if bm.source is not None and bm.source.npz is not None:
        with bm.source.npz_path(data_root).open("rb") as f:
            out["npz_sha256"] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def examples_table(model, splits: Splits, batch_size: int, channels_last: bool,
                   r: ranks.Ranks = ranks.SINGLE) -> dict[str, list] | None:
    """Every example's record; data-parallel, every rank evaluates a share and rank 0 gets the
    table (None on the others)."""
    cols: dict[str, list] = {f: [] for f in schemas.EXAMPLES.names}
    for split in (splits.train, splits.val, splits.test):
        loss, pred = evaluate(model, split, splits, batch_size, channels_last, r)
        if loss is None:  # (this rank's share went to rank 0)
            continue
        y, true_y = split.y.cpu(), split.true_y.cpu()
        cols["split"] += [split.name] * len(split)
        cols["index"] += split.index.cpu().tolist()
        cols["observed_label"] += y.tolist()
        cols["true_label"] += true_y.tolist()
        cols["is_noisy"] += (y != true_y).tolist()
        cols["loss"] += loss.tolist()
        cols["predicted"] += pred.tolist()
        cols["correct_observed"] += (pred == y).tolist()
        cols["correct_true"] += (pred == true_y).tolist()
    return cols if r.main else None


def summarize(cell: Cell, ex: dict[str, list], report: dict, start: Start) -> dict:
    split = np.array(ex["split"])
    loss = np.array(ex["loss"], dtype=np.float64)
    noisy = np.array(ex["is_noisy"])
    correct = np.array(ex["correct_observed"])

    def mean(values, where):
        return float(values[where].mean()) if where.any() else float("nan")

    train, val, test = split == "train", split == "val", split == "test"
    bm = cell.benchmark
    return {
        "cell_hash": cell.hash, "noise_mode": cell.study.noise_mode, "dataset": bm.dataset,
        "model": bm.model["name"], "variant": bm.prune.variant,
        "test_error": 1 - mean(correct, test), "test_loss": mean(loss, test),
        "val_error": 1 - mean(correct, val), "val_loss": mean(loss, val),
        "train_error": 1 - mean(correct, train), "train_loss": mean(loss, train),
        "train_loss_clean": mean(loss, train & ~noisy), "train_loss_noisy": mean(loss, train & noisy),
        # fraction of noisy training examples fitted to their (wrong) observed label
        "memorization": mean(correct, train & noisy),
        "noise_effective": float(noisy[train].mean()) if train.any() else 0.0,
        "noisy_examples": int((train & noisy).sum()), "train_examples": int(train.sum()),
        **{k: report[k] for k in ("density", "sparsity", "sparsity_all", "prunable_weights",
                                  "prunable_nonzero", "parameters", "parameters_kept")},
        "width": start.width, "width_ratio": start.width_ratio,
        "cycles": start.total_cycles,
        "total_epochs": start.total_cycles * bm.train.epochs if start.total_epochs is None else start.total_epochs,
    }


def run(cell: Cell, *, device: str | None = None) -> Path:
    """Run `cell` unless its complete records with the same hash exist; return its folder.
    One process at a time: a second one on the same cell raises CellLockedError. A rank of
    a data-parallel cell (engine.ranks): rank 0 holds the lock and says whether it was had."""
    r = ranks.current()
    with contextlib.ExitStack() as held:
        if r.main:
            try:
                held.enter_context(CellLock(cell.dir, cell.label))
            except Exception as e:
                r.tell(str(e))
                raise
        why = r.tell(None)
        if why is not None:
            raise ranks.RanksError(f"{cell.label}: rank 0 could not start the cell: {why}")
        return _run(cell, device, r)


def _run(cell: Cell, device: str | None, r: ranks.Ranks = ranks.SINGLE) -> Path:
    out = cell.dir
    own = store.check(out, cell.hash, verify=True) if r.main else None  # checksummed before trusting them
    if r.tell(own.state if own else None) == "complete":
        log.info("%s: complete (hash %s), skipping", cell.label, cell.hash)
        return out
    if own is not None and own.state == "corrupt":
        log.warning("%s: corrupt records (%s): running it again", cell.label, own.problem)
    for parent in chains.parents(cell):
        check_parent(cell, parent)
    t0 = time.perf_counter()
    bm = cell.benchmark
    dev = r.device(resolve_device(device or cell.study.device))
    precision = set_determinism(dev, cell.study.deterministic)
    # Everything that can fail on bad input happens before the cell folder is touched.
    dataset = load_dataset(bm.dataset, cell.study.data_root, source=bm.source)
    splits = make_splits(dataset, val_size=bm.data.val_size, noise=cell.noise, noise_mode=cell.study.noise_mode,
                         seed=cell.seed, augment=bm.data.augment, device=dev)
    removed = None
    if cell.base in TIE_BASES:  # trains without the examples prunegen.engine.tie picks
        splits, chosen, removed = tie.remove(
            cell, splits, lambda p: read_parent(cell, p, layout.EXAMPLES_FILE, store.read_parquet_verified))
    start = STARTS[cell.base](cell, dataset.input_shape, dataset.num_classes, splits)

    if r.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / layout.COMPLETE_MARKER).unlink(missing_ok=True)  # stale records of another hash
    model = start.model.to(dev)
    mask = {n: m.to(dev) for n, m in start.mask.items()}
    channels_last = use_channels_last(model, dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def save_rewind(cycle: int, epoch: int, m) -> None:
        if cell.arm == "dense" and epoch == min(bm.prune.rewind_epoch, bm.train.epochs):
            save_torch({k: v.detach().cpu() for k, v in m.state_dict().items()}, out / layout.REWIND_FILE)

    checkpoint = Checkpoint(out / layout.CHECKPOINT_FILE, cell.hash, every_s=cell.study.checkpoint_every_s)
    history, info = train(model, mask, splits, bm.train, cycles=start.cycles, seed=cell.seed,
                          checkpoint=checkpoint, label=cell.label, lr_constant=start.lr_constant,
                          on_epoch=save_rewind, first_epoch=start.first_epoch, ranks=r)
    ex = examples_table(model, splits, bm.train.eval_batch_size, channels_last, r)  # (every rank a share)
    if not r.main:  # rank 0 writes the records
        return out

    prefix = chains.prefix(cell)
    if cell.base in CHAIN_ARMS or prefix is not None:  # the whole curve: every cycle behind this model
        history = parent_history(cell, chains.parents(cell)[0]) + history
    report = pruning.sparsity_report(model, mask)
    summary = summarize(cell, ex, report, start)
    summary["wall_seconds"] = time.perf_counter() - t0

    cpu_state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_torch(cpu_state, out / layout.MODEL_FILE)
    save_torch({n: m.cpu() for n, m in mask.items()}, out / layout.MASK_FILE)
    store.write_parquet(history, schemas.HISTORY, out / layout.HISTORY_FILE)
    store.write_parquet(ex, schemas.EXAMPLES, out / layout.EXAMPLES_FILE)
    store.write_parquet([summary], schemas.SUMMARY, out / layout.SUMMARY_FILE)
    rewind = (out / layout.REWIND_FILE).exists() and cell.arm == "dense"
    files = layout.RECORD_FILES + ((layout.REWIND_FILE,) if rewind else ())
    if removed is not None:  # the TIE cell names the examples it left out
        loss, pred = evaluate(model, removed, splits, bm.train.eval_batch_size, channels_last)
        store.write_parquet(tie.removed_rows(chosen, removed, loss, pred), schemas.REMOVED, out / layout.REMOVED_FILE)
        files += (layout.REMOVED_FILE,)
    store.write_cell_json({
        "cell_hash": cell.hash, "key": cell.key, "hparams": cell.hparams(), "study": cell.study.name,
        "width": start.width, "width_ratio": start.width_ratio, "cycles_trained": start.cycles,
        "layer_density": report["layer_density"], "resumed_from": info["resumed_from"],
        "data": _data_record(bm, dataset, cell.study.data_root),
        **({"factory": {"path": bm.model["factory"], "source_digest": factories.source_digest(bm.model["factory"])}}
           if "factory" in bm.model else {}),
        "continued_from": None if prefix is None else {"cell": prefix.relpath, "cell_hash": prefix.hash},
        **({"ranks": r.world} if r.world > 1 else {}),
        "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(),
        "machine": provenance.describe_machine(torch.get_num_threads(),
                                               torch.cuda.get_device_name(dev) if dev.type == "cuda" else None),
        "versions": {"prunegen": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "engine": provenance.describe_engine(torch.__version__, dev.type, precision,
                                              cell.study.deterministic or dev.type != "cuda"), "git_revision": _git_revision(), "wall_seconds": summary["wall_seconds"],
    }, out, files)
    (out / layout.SET_ASIDE).unlink(missing_ok=True)  # a corrupt earlier run's marker
    checkpoint.clear()
    log.info("%s: done in %.1fs: test error %.4f, train loss %.4f, density %.4f",
             cell.label, summary["wall_seconds"], summary["test_error"], summary["train_loss"], summary["density"])
    return out


def run_cell(study: Study, benchmark: str, arm: str, level: int, noise: float, seed: int,
             device: str | None = None) -> Path:
    """The Python twin of `prunegen run-cell`."""
    return run(study.cell(benchmark, arm, level, noise, seed), device=device)
