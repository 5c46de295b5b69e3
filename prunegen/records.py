"""What a cell records, and how records are written (atomically) and read back.

Cell folders are hive-style (`benchmark=b/arm=a/noise=f/seed=s/level=k`), so the keys
live in the path and not in the files: `read(root, kind)` returns every cell's rows
with the keys as typed columns.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

KEYS = pa.schema([("benchmark", pa.string()), ("arm", pa.string()), ("noise", pa.float64()),
                  ("seed", pa.int64()), ("level", pa.int64())])

HISTORY = pa.schema([
    ("cycle", pa.int64()), ("epoch", pa.int64()), ("lr", pa.float64()),
    ("train_loss", pa.float64()), ("train_acc", pa.float64()),
    ("val_loss", pa.float64()), ("val_acc", pa.float64()),
    ("test_loss", pa.float64()), ("test_acc", pa.float64()),
    ("seconds", pa.float64()),
])

EXAMPLES = pa.schema([
    ("split", pa.string()), ("index", pa.int64()),
    ("observed_label", pa.int64()), ("true_label", pa.int64()), ("is_noisy", pa.bool_()),
    ("loss", pa.float32()), ("predicted", pa.int64()),
    ("correct_observed", pa.bool_()), ("correct_true", pa.bool_()),
])

SUMMARY = pa.schema([
    ("cell_hash", pa.string()), ("noise_mode", pa.string()), ("dataset", pa.string()),
    ("model", pa.string()), ("variant", pa.string()),
    ("test_error", pa.float64()), ("test_loss", pa.float64()),
    ("val_error", pa.float64()), ("val_loss", pa.float64()),
    ("train_error", pa.float64()), ("train_loss", pa.float64()),
    ("train_loss_clean", pa.float64()), ("train_loss_noisy", pa.float64()),
    ("memorization", pa.float64()), ("noise_effective", pa.float64()),
    ("noisy_examples", pa.int64()), ("train_examples", pa.int64()),
    ("density", pa.float64()), ("sparsity", pa.float64()), ("sparsity_all", pa.float64()),
    ("prunable_weights", pa.int64()), ("prunable_nonzero", pa.int64()),
    ("parameters", pa.int64()), ("parameters_kept", pa.int64()),
    ("width", pa.int64()), ("width_ratio", pa.float64()),
    ("cycles", pa.int64()), ("total_epochs", pa.int64()),
    ("wall_seconds", pa.float64()),
])

# Columns that measure the clock, not the science: ignored when comparing runs.
WALL_CLOCK = {"seconds", "wall_seconds"}

RECORD_FILES = ("history.parquet", "examples.parquet", "summary.parquet", "model.pt", "mask.pt")
COMPLETE_MARKER = "cell.json"  # written last: a folder without it is not a result


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_path(path: Path):
    """A temporary sibling of `path`; os.replace it onto `path` when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it owner-only; results are for the whole group
    return Path(tmp)


@contextlib.contextmanager
def atomic_write(path: Path):
    """Yield a temporary sibling of `path` to write; on success it replaces `path` in one
    rename, on failure it is removed: readers see the old file or the whole new one."""
    tmp = atomic_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(rows: list[dict] | dict[str, Any], schema: pa.Schema, path: Path) -> None:
    table = (pa.Table.from_pylist(rows, schema=schema) if isinstance(rows, list)
             else pa.Table.from_pydict(rows, schema=schema))
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp)


def write_json(obj: Any, path: Path) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_torch(obj: Any, path: Path) -> None:
    import torch

    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def read_cell_json(cell_dir: Path) -> dict | None:
    try:
        return json.loads((cell_dir / COMPLETE_MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_complete(cell_dir: Path, cell_hash: str) -> bool:
    meta = read_cell_json(cell_dir)
    return (meta is not None and meta.get("cell_hash") == cell_hash
            and all((cell_dir / f).exists() for f in RECORD_FILES))


def read(cells_root: Path, kind: str, columns: list[str] | None = None) -> pa.Table:
    """Every cell's `<kind>.parquet` under `cells_root`, keys as typed columns."""
    import pyarrow.dataset as ds  # only the merge needs it, not every cell job

    files = sorted(str(p) for p in Path(cells_root).glob(f"**/{kind}.parquet"))
    dataset = ds.dataset(files, format="parquet", partitioning=ds.partitioning(KEYS, flavor="hive"),
                         partition_base_dir=str(cells_root))
    return dataset.to_table(columns=columns)
