"""The Parquet schemas of a cell's records (what every cell writes, and the merge reads).

Cell folders are hive-style (`benchmark=b/arm=a/noise=f/seed=s/level=k`), so the keys live
in the path and not in the files: `KEY_SCHEMA` types them when a reader puts them back as
columns. The rest of `cell.json` (hyperparameters, checksums, provenance) is JSON.
"""

from __future__ import annotations

import pyarrow as pa

from ..study.grid import KEYS

_KEY_TYPES = {"benchmark": pa.string(), "arm": pa.string(), "noise": pa.float64(), "seed": pa.int64(),
              "level": pa.int64()}
KEY_SCHEMA = pa.schema([(k, _KEY_TYPES[k]) for k in KEYS])  # the folder's keys, in the folder's order
KEY_COLUMNS = list(KEYS)  # the same, as the column list pandas takes


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


# The examples a TIE cell left out (prunegen.engine.tie): one row per removed example.
REMOVED = pa.schema([
    ("index", pa.int64()), ("rank", pa.int64()), ("improvement", pa.float64()),
    ("dense_loss", pa.float64()), ("source_loss", pa.float64()),
    ("observed_label", pa.int64()), ("is_noisy", pa.bool_()),
    ("loss", pa.float64()), ("predicted", pa.int64()), ("correct_observed", pa.bool_()),
])
