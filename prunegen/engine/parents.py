"""A parent cell's records, read for its child: refused unless complete, and every file
checked against its parent's cell.json, so a corrupt parent is named (with what to delete)
instead of being trained on."""

from __future__ import annotations

from ..records import layout, store
from ..study.grid import Cell
from . import pruning
from .checkpoints import load_torch


class MissingParentError(RuntimeError):
    pass


def check_parent(cell: Cell, parent: Cell) -> None:
    """Refuse to start `cell` unless `parent`'s records are complete and match their sizes."""
    state = store.check(parent.dir, parent.hash)
    if state.state == "corrupt":
        raise store.CorruptRecordError(_corrupt(cell, parent, state.problem))
    if state.state != "complete":
        raise MissingParentError(f"{cell.label} needs the complete parent cell {parent.dir} "
                                 f"({state.state}; run it first)")


def _corrupt(cell: Cell, parent: Cell, problem: str) -> str:
    return (f"{cell.label} reads the corrupt record {problem}; delete {parent.dir} and run the "
            f"workflow again, which re-runs {parent.label} and the cells after it")


def read_parent(cell: Cell, parent: Cell, name: str, how):
    try:
        return how(parent.dir, name)
    except store.CorruptRecordError as e:
        raise store.CorruptRecordError(_corrupt(cell, parent, str(e))) from None


def load_final(cell: Cell, parent: Cell) -> tuple[dict, pruning.Mask]:
    """The final weights and mask of `cell`'s complete parent, checksums verified."""
    check_parent(cell, parent)
    return read_parent(cell, parent, layout.MODEL_FILE, load_torch), read_parent(cell, parent, layout.MASK_FILE, load_torch)


def parent_history(cell: Cell, parent: Cell) -> list[dict]:
    return read_parent(cell, parent, layout.HISTORY_FILE, store.read_parquet_verified).to_pylist()


def rewind_state(cell: Cell, dense: Cell) -> dict:
    if layout.REWIND_FILE not in (store.read_cell_json(dense.dir) or {}).get("files", {}):
        raise MissingParentError(f"weight_rewind needs {dense.dir / layout.REWIND_FILE}, saved by the dense "
                                 "level-0 cell")
    return read_parent(cell, dense, layout.REWIND_FILE, load_torch)
