"""The top-improved-examples (TIE) ablation of the paper's supplement.

At level k, training examples are ranked by how much pruning improved their training
loss: `improvement = loss(dense level 0) - loss(source level k)` (the `examples` records
of the two cells, same seed and noise, so the same training split and labels), highest
first, ties broken by dataset index. `tie_removed` retrains dense without the top
`n = round(top x N)` of them (N: training examples); `tie_random` without `n` examples
drawn uniformly (stream "tie-random", the seed and the level). Each TIE cell records the
examples it left out in `removed.parquet` (one row per removed example: dataset index,
rank, the improvement and both losses it was ranked on, NaN for tie_random, and the final
model's loss and prediction on it); its `examples.parquet` and summary cover the examples
it trained on.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import torch

from ..study import chains
from ..study.grid import Cell
from .seeds import generator
from .splits import Split, Splits


def removed_count(top: float, n: int) -> int:
    """round(top x N): how many training examples a TIE cell leaves out."""
    return int(round(top * n))


def train_losses(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(dataset index, loss) of the training split of an `examples` table, by index."""
    split = table["split"].to_numpy(zero_copy_only=False)
    index = table["index"].to_numpy()[split == "train"]
    loss = table["loss"].to_numpy().astype(np.float64)[split == "train"]
    order = np.argsort(index, kind="stable")
    return index[order], loss[order]


def ranking(dense: pa.Table, source: pa.Table) -> dict[str, np.ndarray]:
    """Training examples by loss improvement from `dense` to `source` (examples tables),
    highest first, ties by index: index, improvement, dense_loss, source_loss."""
    di, dl = train_losses(dense)
    si, sl = train_losses(source)
    if not np.array_equal(di, si):
        raise ValueError("the two cells' examples tables hold different training examples")
    improvement = dl - sl
    order = np.lexsort((di, -improvement))
    return {"index": di[order], "improvement": improvement[order], "dense_loss": dl[order], "source_loss": sl[order]}


def choose(cell: Cell, n_train: int, read_examples) -> dict[str, np.ndarray]:
    """The examples `cell` leaves out, in rank order: `read_examples(parent)` reads a
    parent's examples table (checksummed)."""
    top = cell.study.arm_specs[cell.arm].options["top"]
    n = removed_count(top, n_train)
    if cell.base == "tie_removed":
        dense, source = chains.parents(cell)
        r = ranking(read_examples(dense), read_examples(source))
        if len(r["index"]) != n_train:
            raise ValueError(f"{cell.label}: the ranking holds {len(r['index'])} training examples, not {n_train}")
        return {k: v[:n] for k, v in r.items()}
    pick = torch.randperm(n_train, generator=generator(cell.seed, "tie-random", cell.level))[:n].numpy()
    nan = np.full(n, np.nan)
    return {"position": pick, "improvement": nan, "dense_loss": nan, "source_loss": nan}


def remove(cell: Cell, splits: Splits, read_examples) -> tuple[Splits, dict[str, np.ndarray], Split]:
    """`splits` with its training split less the examples `cell` removes, the removed rows
    (rank order) and the removed examples as a split of their own (to evaluate on)."""
    train = splits.train
    index = train.index.cpu().numpy()
    chosen = choose(cell, len(train), read_examples)
    if "position" in chosen:
        positions = chosen.pop("position")
        chosen["index"] = index[positions]
    else:
        positions = np.searchsorted(index, chosen["index"])
        if not np.array_equal(index[positions], chosen["index"]):
            raise ValueError(f"{cell.label}: ranked examples are not in the training split")
    drop = torch.zeros(len(train), dtype=torch.bool)
    drop[torch.as_tensor(positions, dtype=torch.long)] = True
    keep = (~drop).nonzero().flatten().to(train.x.device)
    gone = torch.as_tensor(positions, dtype=torch.long, device=train.x.device)

    def sub(name, idx):
        return Split(name, train.x[idx], train.y[idx], train.true_y[idx], train.index[idx])

    chosen["rank"] = np.arange(len(positions))
    return dataclasses.replace(splits, train=sub("train", keep)), chosen, sub("removed", gone)


def removed_rows(chosen: dict[str, np.ndarray], removed: Split, loss, pred) -> dict[str, list]:
    y = removed.y.cpu()
    return {
        "index": chosen["index"].tolist(), "rank": chosen["rank"].tolist(),
        "improvement": chosen["improvement"].tolist(), "dense_loss": chosen["dense_loss"].tolist(),
        "source_loss": chosen["source_loss"].tolist(), "observed_label": y.tolist(),
        "is_noisy": (y != removed.true_y.cpu()).tolist(), "loss": loss.double().tolist(),
        "predicted": pred.tolist(), "correct_observed": (pred == y).tolist(),
    }
