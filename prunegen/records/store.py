"""How records are written (atomically) and read back (verified against cell.json).

Every write goes to a temporary sibling and is renamed onto its name, so a reader sees
the old file or the whole new one. `cell.json`, written last, records the size, sha256
and mtime of every record file and a checksum of itself; `check` says where a cell
stands (complete, stale, corrupt or missing) cheaply, and `read_verified` is what every
reader of another cell's records goes through.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .layout import COMPLETE_MARKER, RECORD_FILES, SET_ASIDE

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


class CorruptRecordError(RuntimeError):
    """A record file that does not match what its cell.json says was written."""


CHECKSUM = "sha256"  # hashlib's, OpenSSL-accelerated: a GB in about a second
_SELF = "cell_json_sha256"  # cell.json's checksum of its own other fields


def digest(path: Path) -> dict:
    """Size, checksum and modification time of a written record file."""
    with open(path, "rb") as f:
        h = hashlib.file_digest(f, CHECKSUM)
        st = os.fstat(f.fileno())
    return {"size": st.st_size, CHECKSUM: h.hexdigest(), "mtime_ns": st.st_mtime_ns}


def _canonical(meta: dict) -> bytes:
    body = {k: v for k, v in meta.items() if k != _SELF}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def write_cell_json(meta: dict, cell_dir: Path, files: tuple[str, ...] = RECORD_FILES) -> None:
    """Write the completion marker last: `meta` plus the size and checksum of every
    record file in `files`, and a checksum of itself, so any of them can be verified."""
    meta = json.loads(json.dumps({**meta, "files": {f: digest(cell_dir / f) for f in files}}, default=str))
    meta[_SELF] = hashlib.new(CHECKSUM, _canonical(meta)).hexdigest()
    write_json(meta, cell_dir / COMPLETE_MARKER)


def is_legacy(meta: dict) -> bool:
    """A cell.json written before record checksums existed: complete, but unverifiable."""
    return "files" not in meta and _SELF not in meta


def _self_checksum_ok(meta: dict) -> bool:
    return hashlib.new(CHECKSUM, _canonical(meta)).hexdigest() == meta[_SELF]


def read_cell_json(cell_dir: Path) -> dict | None:
    """The cell's verified cell.json; None if there is none. Raises CorruptRecordError
    naming the file when it is truncated or garbled. One written before checksums
    existed (no `files`, no self-checksum: `is_legacy`) is returned as it is, so that
    upgrading prunegen does not re-run a finished grid."""
    path = cell_dir / COMPLETE_MARKER
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptRecordError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or "cell_hash" not in meta:
        raise CorruptRecordError(f"{path}: not a cell record (no cell_hash; garbled)")
    if is_legacy(meta):
        return meta
    if _SELF not in meta or not isinstance(meta.get("files"), dict):
        raise CorruptRecordError(f"{path}: has only part of its record checksums (garbled)")
    if not _self_checksum_ok(meta):
        raise CorruptRecordError(f"{path}: its content does not match its own checksum (garbled)")
    return meta


def mismatch(path: Path, expected: dict, data: bytes | None = None) -> str | None:
    """Why `path` is not the file recorded as `expected` (None if it is). Given its bytes
    `data` (a reader's), their size and checksum; else one stat, trusted when size and
    mtime match, and a checksum of the file when its mtime changed."""
    if data is not None:
        size = len(data)
    else:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return f"{path}: missing"
        size = st.st_size
    if size != expected["size"]:
        return f"{path}: {size} bytes, {expected['size']} recorded (truncated or overwritten)"
    if data is None and st.st_mtime_ns == expected.get("mtime_ns"):
        return None  # unchanged since it was checksummed: the cheap check stops here
    if data is None:
        with open(path, "rb") as f:
            actual = hashlib.file_digest(f, CHECKSUM).hexdigest()
    else:
        actual = hashlib.new(CHECKSUM, data).hexdigest()
    if actual != expected[CHECKSUM]:
        return f"{path}: {CHECKSUM} {actual[:12]}..., {expected[CHECKSUM][:12]}... recorded (garbled)"
    return None


@dataclass(frozen=True)
class State:
    state: str                  # complete, stale, corrupt or missing
    problem: str | None = None  # corrupt: the file and what is wrong with it
    meta: dict | None = None    # the verified cell.json, when it is readable
    verified: bool = True       # False: complete, but written before checksums (nothing to verify against)


def check(cell_dir: Path, cell_hash: str, verify: bool = False, read_later: tuple[str, ...] = ()) -> State:
    """Where a cell stands. Cheap by default: cell.json is verified, and every record
    file's size (and modification time) is compared with it; a file whose mtime
    changed is checksummed. `verify` checksums every file. `read_later`: files the
    caller reads and checksums anyway (the merge's Parquet files), not looked at here."""
    try:
        meta = read_cell_json(cell_dir)
    except CorruptRecordError as e:
        return State("corrupt", str(e))
    if meta is None:
        if (cell_dir / SET_ASIDE).exists():
            return State("corrupt", f"{cell_dir / SET_ASIDE}: set aside as corrupt by the workflow, "
                                    "which re-runs the cell")
        return State("missing")
    if meta.get("cell_hash") != cell_hash:
        return State("stale", meta=meta)
    if is_legacy(meta):  # no checksums to compare with: its record files must at least be there
        for name in RECORD_FILES:
            if not (cell_dir / name).exists():
                return State("corrupt", f"{cell_dir / name}: missing", meta)
        return State("complete", meta=meta, verified=False)
    for name in dict.fromkeys([*RECORD_FILES, *meta["files"]]):  # + rewind.pt where dense saved one
        expected = meta["files"].get(name)
        if expected is None:
            return State("corrupt", f"{cell_dir / COMPLETE_MARKER}: records no checksum of {name}", meta)
        if name in read_later and not verify:
            continue
        path = cell_dir / name
        problem = mismatch(path, expected, path.read_bytes() if verify and path.exists() else None)
        if problem:
            return State("corrupt", problem, meta)
    return State("complete", meta=meta)


def is_complete(cell_dir: Path, cell_hash: str, verify: bool = False) -> bool:
    return check(cell_dir, cell_hash, verify).state == "complete"


def read_verified(cell_dir: Path, name: str, meta: dict | None = None) -> bytes:
    """A record file's bytes, checked against its cell.json's size and checksum:
    what every reader of another cell's records goes through."""
    meta = read_cell_json(cell_dir) if meta is None else meta
    path = cell_dir / name
    if meta is None:
        raise CorruptRecordError(f"{path}: its cell has no {COMPLETE_MARKER}")
    if is_legacy(meta):  # written before checksums: read as it is (a parse error still names it)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise CorruptRecordError(f"{path}: missing") from None
    expected = meta["files"].get(name)
    if expected is None:
        raise CorruptRecordError(f"{path}: {cell_dir / COMPLETE_MARKER} records no checksum of it")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorruptRecordError(f"{path}: missing") from None
    problem = mismatch(path, expected, data)
    if problem:
        raise CorruptRecordError(problem)
    return data


def read_parquet_verified(cell_dir: Path, name: str, meta: dict | None = None,
                          columns: list[str] | None = None) -> pa.Table:
    data = read_verified(cell_dir, name, meta)
    try:
        return pq.ParquetFile(pa.BufferReader(data)).read(columns=columns, use_threads=False)
    except (pa.ArrowException, OSError) as e:
        raise CorruptRecordError(f"{cell_dir / name}: not a readable Parquet file ({e})") from None


