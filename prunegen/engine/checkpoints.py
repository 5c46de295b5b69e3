"""A cell's torch files: its final weights and mask, dense's rewind point, and the training
checkpoint. Written atomically (prunegen.records.store); a record of another cell is read
only after its checksum matches its cell.json, and always `weights_only`.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..records.store import CorruptRecordError, atomic_write, read_verified

log = logging.getLogger("prunegen")


def save_torch(obj: Any, path: Path) -> None:
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def load_torch(cell_dir: Path, name: str, meta: dict | None = None) -> Any:
    """A verified torch record (model.pt, mask.pt, rewind.pt), weights only."""
    data = read_verified(cell_dir, name, meta)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # a file without a checksum to compare with (legacy): still one clear error
        raise CorruptRecordError(f"{cell_dir / name}: not a readable torch file ({e})") from None


class CheckpointError(RuntimeError):
    pass


@dataclass
class Checkpoint:
    """One file per cell, rewritten atomically: at the end of an epoch once `every_s` seconds
    have passed since the last save (every epoch at 0), at the end of every cycle, and
    mid-epoch when a signal asks the cell to stop (engine.stopping)."""

    path: Path
    fingerprint: str  # the cell hash: a checkpoint of another configuration is never resumed
    every_s: float = 0.0
    _saved_at: float = field(default_factory=lambda: time.monotonic(), repr=False)  # (looked up per call)

    def due(self, cycle_end: bool = False) -> bool:
        return cycle_end or time.monotonic() - self._saved_at >= self.every_s

    def save(self, **state) -> None:
        save_torch({"fingerprint": self.fingerprint, **state}, self.path)
        self._saved_at = time.monotonic()

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated or garbled file
            raise CheckpointError(f"corrupt checkpoint {self.path}: {e}; delete it to start the cell over") from e
        if state.get("fingerprint") != self.fingerprint:
            log.warning("ignoring checkpoint %s of another configuration", self.path)
            return None
        return state

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
