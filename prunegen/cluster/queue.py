"""A queue of cells in a folder: how warm processes (prunegen.cluster.worker) get their cells.

    <queue>/todo/<id>.json              a cell to run: its `prunegen` arguments, threads, log
    <queue>/claimed/<worker>/<id>.json  taken by one worker
    <queue>/done/<id>.json              what came of it: exit code, error, cost
    <queue>/cancel/<id>                 asks the worker running it to stop (it checkpoints first)
    <queue>/stop                        asks every worker to exit once its cell is done

A worker claims a task by renaming it out of todo/. rename() is atomic on local disks,
NFS and Lustre: of several workers renaming one file, one wins and the others get
ENOENT. So a cell has one claimant without a lock server, and a claim names its worker,
which is how a dead worker's cells are found (the SLURM job or local process is gone)
and put back or failed. Files are written under a temporary name and renamed into place,
so no reader sees half a task or half a result. Torch-free: the client side of a cell
job (`prunegen run-cell` with PRUNEGEN_WARM set) imports only this.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

ENV = "PRUNEGEN_WARM"  # the queue folder a cell job sends its cell to (prunegen.cli run-cell)


def exit_words(rc: int) -> str:
    """A process's exit status as words: "exit 1", "signal SIGKILL"."""
    return f"signal {signal.Signals(-rc).name}" if rc < 0 and -rc in signal.Signals._value2member_map_ \
        else f"exit {rc}"


# Not records.store's atomic_write: that module imports pyarrow, which the client side of
# every warm cell job (this module alone) should not pay for.
def _write(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


class Queue:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).absolute()
        for sub in ("todo", "claimed", "done", "cancel", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ producers
    def put(self, task: dict) -> str:
        """Queue a task (a dict with at least `argv`); returns its id. Ids sort by time, so
        workers take tasks first in, first out."""
        tid = task.get("id") or f"{time.time_ns():020d}-{uuid.uuid4().hex[:6]}"
        (self.root / "stop").unlink(missing_ok=True)  # a queue that was told to stop has work again
        _write(self.root / "todo" / f"{tid}.json", {**task, "id": tid})
        return tid

    def withdraw(self, tid: str) -> bool:
        """Take a task back before any worker claimed it; False once one has."""
        try:
            (self.root / "todo" / f"{tid}.json").unlink()
            return True
        except FileNotFoundError:
            return False

    def cancel(self, tid: str) -> None:
        (self.root / "cancel" / tid).touch()

    def stop(self) -> None:
        (self.root / "stop").touch()

    def result(self, tid: str) -> dict | None:
        return _read(self.root / "done" / f"{tid}.json")

    def log_path(self, tid: str) -> Path:
        return self.root / "log" / f"{tid}.log"

    def todo(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "todo").glob("*.json"))

    def claims(self) -> dict[str, list[str]]:
        """worker -> the ids of the tasks it holds."""
        out: dict[str, list[str]] = {}
        for d in (self.root / "claimed").iterdir():
            ids = sorted(p.stem for p in d.glob("*.json"))
            if ids:
                out[d.name] = ids
        return out

    def claimed_task(self, worker: str, tid: str) -> dict | None:
        return _read(self.root / "claimed" / worker / f"{tid}.json")

    # ------------------------------------------------------------------ workers
    def claim(self, worker: str) -> dict | None:
        """The oldest task nobody holds, now held by `worker`; None when there is none."""
        mine = self.root / "claimed" / worker
        mine.mkdir(exist_ok=True)
        for tid in self.todo():
            try:
                os.rename(self.root / "todo" / f"{tid}.json", mine / f"{tid}.json")
            except FileNotFoundError:
                continue  # another worker won it
            task = _read(mine / f"{tid}.json")
            if task is not None:
                return task
        return None

    def release(self, worker: str, tid: str, **changes) -> None:
        """Put a held task back in todo/ (its worker stops or died), with `changes` to it."""
        src = self.root / "claimed" / worker / f"{tid}.json"
        task = _read(src)
        if task is None:
            return
        _write(self.root / "todo" / f"{tid}.json", {**task, **changes})
        src.unlink(missing_ok=True)

    def finish(self, worker: str, tid: str, result: dict) -> None:
        """Record a held task's outcome, then let go of it."""
        _write(self.root / "done" / f"{tid}.json", {**result, "id": tid, "worker": worker})
        (self.root / "claimed" / worker / f"{tid}.json").unlink(missing_ok=True)
        (self.root / "cancel" / tid).unlink(missing_ok=True)

    def cancelled(self, tid: str) -> bool:
        return (self.root / "cancel" / tid).exists()

    def stopping(self) -> bool:
        return (self.root / "stop").exists()

    def orphans(self, worker: str, why: str, *, put_back: bool, max_attempts: int = 3) -> list[str]:
        """The tasks of a worker that is gone: put back in todo/ (a node failed: another worker
        resumes the cell from its checkpoint) up to `max_attempts` workers per task, or
        failed with `why`. Returns the ids failed."""
        failed = []
        for tid in self.claims().get(worker, []):
            task = self.claimed_task(worker, tid) or {}
            lost = task.get("workers_lost", 0) + 1
            if put_back and lost < max_attempts:
                self.release(worker, tid, workers_lost=lost)
            else:
                self.finish(worker, tid, {"rc": 1, "error": why, "workers_lost": lost})
                failed.append(tid)
        return failed

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def run_through(queue_dir: str | os.PathLike, argv: list[str], threads: int, out=None,
                poll_s: float = 0.05) -> int:
    """The client side of a warm cell job: queue the cell, relay its log to `out` as it
    grows, and return its exit code once a worker has run it (as `prunegen run-cell` would
    have). SIGTERM or SIGINT here stops the cell where it is (its worker checkpoints it)."""
    out = out or sys.stdout
    q = Queue(queue_dir)
    tid = q.put({"argv": list(argv), "threads": int(threads), "log": None})
    log = q.log_path(tid)
    asked: list[int] = []

    def ask(signum, frame):
        asked.append(signum)
        if not q.withdraw(tid):  # a worker has it: ask it to checkpoint and stop
            q.cancel(tid)

    if threading.current_thread() is threading.main_thread():  # (Python's rule for handlers)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
            signal.signal(sig, ask)
    offset = 0
    while True:
        result = q.result(tid)
        offset = _relay(log, offset, out)
        if result is not None:
            _relay(log, offset, out)
            log.unlink(missing_ok=True)
            if result.get("error") and not result.get("logged"):  # e.g. its worker died: say why
                print(f"prunegen: {result['error']}", file=out, flush=True)
            return int(result.get("rc", 1))
        if asked and not (q.root / "todo" / f"{tid}.json").exists() and not any(
                tid in ids for ids in q.claims().values()):
            return 128 + asked[0]  # withdrawn before any worker took it
        time.sleep(poll_s)


def _relay(log: Path, offset: int, out) -> int:
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        return offset
    if chunk:
        out.write(chunk.decode(errors="replace"))
        out.flush()
    return offset + len(chunk)
