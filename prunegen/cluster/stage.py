"""A dataset staged once per node to node-local storage (issue 30 item 4).

Every cell process reads its dataset from `data_root`, on the cluster's shared file system:
at the paper grid's thousands of cells, and their requeues, that is the same files read
thousands of times. With `PRUNEGEN_STAGE_DIR` set (the profile's `prunegen-stage-dir`, e.g.
`$SLURM_TMPDIR` or `/tmp`), a cell first copies its dataset's files into
`<stage dir>/prunegen-data/<digest of data_root>/`, once per node: the first job there copies
(under a file lock, each file written under a temporary name and renamed), every later one
finds the copy (same size and modification time as the source) and reads it. Only the
files the engine reads are copied (prunegen.engine.data.dataset_files, which `prunegen
run-cell` gives it: this module stays torch-free, as the cluster side must): the in-memory
datasets; image folders (ImageNet's 140 GB) are not staged.

What a cell computes does not depend on where its files were read (the copy has the same
bytes; a researcher's npz has its sha256 in cell.json either way).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from filelock import FileLock

ENV = "PRUNEGEN_STAGE_DIR"


def _same(src: Path, dst: Path) -> bool:
    try:
        a, b = src.stat(), dst.stat()
    except OSError:
        return False
    return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns


def stage(files: list[Path], data_root: Path, stage_dir: Path) -> Path:
    """Copy `files` (under `data_root`) to this node's stage, where not there already;
    returns the staged data root, laid out as `data_root` is."""
    data_root = Path(data_root).expanduser().absolute()
    digest = hashlib.sha256(str(data_root).encode()).hexdigest()[:12]
    root = Path(stage_dir) / "prunegen-data" / digest
    root.mkdir(parents=True, exist_ok=True)
    todo = [f for f in files if not _same(f, root / f.relative_to(data_root))]
    if not todo:
        return root
    with FileLock(str(root / ".stage.lock"), timeout=3600):  # one copier per node; the others wait for it
        for src in todo:
            dst = root / src.relative_to(data_root)
            if _same(src, dst):  # another job on the node copied it meanwhile
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
            shutil.copy2(src, tmp)  # with its modification time: the next job sees the same file
            os.replace(tmp, dst)
    return root


def stage_dir() -> Path | None:
    """Where this node stages datasets (PRUNEGEN_STAGE_DIR), None when not set or empty."""
    where = os.environ.get(ENV, "").strip()
    return Path(where) if where else None
