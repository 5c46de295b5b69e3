"""The list of an image-folder dataset's files, kept in an index so that a cell does not list
them again (ImageNet: 1.28 M files; on a cluster's shared file system a listing is minutes
of metadata traffic, and a data-parallel cell's every rank would list them).

The list is torchvision's ImageFolder's (`make_dataset`): classes sorted, each class folder
walked (following links) with folders and files sorted, images by extension. The index keeps
it, relative to the dataset's root, with the modification time of every folder the listing
walked: adding, removing or renaming a file or a folder changes its folder's time, so an index
whose folders all have their recorded times lists what a listing would (a few thousand stats
instead of a million directory entries). Any other index is listed again and replaced; so is
one whose folders had just changed when it was written (their times may not show a change
made within the same tick of the file system's clock).

Where: `$PRUNEGEN_INDEX_DIR`, else `$XDG_CACHE_HOME/prunegen/folders` (`~/.cache/...`), a
file per dataset root named by the root's digest: the home directory, seen by every node,
where the dataset's own folder may be read-only. One process lists while the others on the
same root wait for it (a file lock), then read its index. An index that cannot be written
(say, a read-only home) costs the listing, never the cell.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
from filelock import FileLock

log = logging.getLogger(__name__)

ENV = "PRUNEGEN_INDEX_DIR"
VERSION = 1
RACY = 2_000_000_000  # ns
SPLITS = ("train", "val")


def index_dir() -> Path:
    where = os.environ.get(ENV, "").strip()
    if where:
        return Path(where)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prunegen" / "folders"


def index_path(root: Path) -> Path:
    return index_dir() / f"{hashlib.sha256(str(root).encode()).hexdigest()[:16]}.npz"


def _walk(root: Path, split: str, classes: list[str], extensions: tuple[str, ...]):
    """(relative paths, class numbers, [(walked folder, its time)]) of one split, in make_dataset's
    order (a class's folders sorted by path, files sorted within each). A folder's time is taken
    before it is read: a file added while the listing runs leaves a newer time than the index's."""
    paths, labels, dirs = [], [], [(split, _mtime(root / split))]
    for c, name in enumerate(classes):
        if not (root / split / name).is_dir():  # val/ may hold some of train/'s classes only
            continue
        found = []  # (relative folder, files) of this class, every level
        todo = [os.path.join(split, name)]
        while todo:
            rel = todo.pop()
            dirs.append((rel, _mtime(root / rel)))
            files = []
            with os.scandir(root / rel) as it:
                for entry in it:
                    if entry.is_dir():  # (a link to a folder too, as os.walk's followlinks=True)
                        todo.append(os.path.join(rel, entry.name))
                    else:
                        files.append(entry.name)
            found.append((rel, files))
        for rel, files in sorted(found):
            for f in sorted(files):
                if f.lower().endswith(extensions):
                    paths.append(os.fsencode(os.path.join(rel, f)))
                    labels.append(c)
    return paths, labels, dirs


def _mtime(path: Path) -> int:
    """A folder's modification time in ns (-1 when it is gone)."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def stamp(root: Path) -> tuple:
    """The times of the split folders and of the class folders in them: a cheap sign that the
    list may have changed (a process that keeps datasets loaded loads one again when it does;
    engine/data.py). Two folder listings of about 1,000 names each for ImageNet."""
    out = []
    for split in SPLITS:
        out.append((split, _mtime(root / split)))
        try:
            with os.scandir(root / split) as it:
                out += sorted((f"{split}/{e.name}", e.stat().st_mtime_ns) for e in it if e.is_dir())
        except OSError:
            pass
    return tuple(out)


def _read(path: Path, root: Path, classes: list[str]):
    """The index at `path` if it is of `root` and `classes` and no walked folder changed, else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            head = json.loads(str(z["head"]))
            if head != {"version": VERSION, "root": str(root), "classes": classes}:
                return None
            if [_mtime(root / os.fsdecode(d)) for d in z["dirs"]] != z["mtimes"].tolist():
                return None
            return {s: (z[f"{s}_paths"], z[f"{s}_labels"]) for s in SPLITS}
    except FileNotFoundError:
        return None
    except Exception as e:  # a torn or foreign file: listed again and replaced
        log.warning("folder index %s unreadable (%s): listing the folders again", path, e)
        return None


def listing(root: Path, classes: list[str], extensions: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per split ("train", "val"): the image paths (absolute, as bytes) and class numbers, from
    the index where it is current, else listed and indexed."""
    root = Path(root).absolute()
    path = index_path(root)
    got = _read(path, root, classes)
    if got is None:
        with _one_lister(path):
            got = _read(path, root, classes) or _write(path, root, classes, extensions)  # (another's, meanwhile)
    prefix = os.fsencode(str(root)) + b"/"
    return {s: (np.char.add(prefix, paths), labels) for s, (paths, labels) in got.items()}


@contextlib.contextmanager
def _one_lister(path: Path):
    """One lister per root at a time (a file lock beside the index); the others wait, then read
    its index. Where there is no lock to be had (no index folder, a file system without locks),
    each process lists: the index is written atomically all the same."""
    lock = FileLock(f"{path}.lock", timeout=3600)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as e:  # (filelock's Timeout is one too)
        log.info("folder index %s: no lock (%s): listing without waiting for another process", path, e)
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _list(root: Path, classes, extensions):
    walked = {s: _walk(root, s, classes, extensions) for s in SPLITS}
    got = {s: (np.array(p, dtype=bytes), np.array(lab, dtype=np.int64)) for s, (p, lab, _) in walked.items()}
    return got, [d for s in SPLITS for d in walked[s][2]]


def _write(path: Path, root: Path, classes, extensions):
    """List the folders and write the index (atomically: under a name of this process's, then
    renamed); returns the list, written or not."""
    began = time.time_ns()
    got, dirs = _list(root, classes, extensions)
    # A folder changed within RACY of the listing may change again within one tick of the file
    # system's clock and keep its time: it is recorded as never matching, so the next cell lists
    # again and records a settled time (git's "racy" entries).
    dirs = [(d, t if t < began - RACY else -2) for d, t in dirs]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, head=json.dumps({"version": VERSION, "root": str(root), "classes": classes}),
                 dirs=np.array([os.fsencode(d) for d, _ in dirs], dtype=bytes),
                 mtimes=np.array([t for _, t in dirs], dtype=np.int64),
                 **{f"{s}_paths": got[s][0] for s in SPLITS}, **{f"{s}_labels": got[s][1] for s in SPLITS})
        os.replace(tmp, path)
    except OSError as e:
        log.warning("folder index %s cannot be written (%s): the next cell lists the folders again", path, e)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return got
    log.info("folder index of %s: %d + %d images, %d folders (%s)", root, len(got["train"][0]),
             len(got["val"][0]), len(dirs), path)
    return got
