"""One writer per cell: an exclusive lock file in the cell folder, held by `run-cell`.

Mechanism: the lock is a file made by hard-linking a complete file (the holder, written
under a name of this process's own) to the lock's name: link(2) fails if the name exists,
atomically on local disks, on NFS and on Lustre, with no lock daemon involved, and the lock
is never seen without its holder (with O_CREAT | O_EXCL, a second process could read the
file between its creation and the write, and name "host None pid None" as the holder). POSIX
fcntl/lockf locks were not chosen: Lustre honours them across nodes only when mounted
with `-o flock` (many sites mount `localflock` or nothing, where they are per node or
fail), NFSv3 needs a working lockd, and NFS drops them silently when a client is cut
off. (filelock's SoftFileLock is the same O_EXCL file, but it cannot tell a stale lock
from a live one, and a lock left by a killed job would block its cell forever.)

The file names its holder: host, pid, the process's start time (so a reused pid is not
mistaken for the holder), and the SLURM job id. A lock is stale, and is broken, when

- its holder was on this host and that process is gone, or
- its heartbeat stopped: the holder touches the file every HEARTBEAT_S seconds, and a
  file untouched for STALE_S seconds belongs to a process that died on another node
  (the only way to know, from here, that a job there was killed).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from .layout import LOCK_FILE

HEARTBEAT_S = 30.0
STALE_S = float(os.environ.get("PRUNEGEN_LOCK_STALE_S", 300))


class CellLockedError(RuntimeError):
    """Another live process is writing this cell."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/pid/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(holder: dict) -> bool:
    pid = int(holder.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    start = _start_time(pid)
    return start is None or holder.get("start") in (None, start)


def describe(holder: dict) -> str:
    job = holder.get("slurm_job_id")
    return (f"host {holder.get('host')} pid {holder.get('pid')}"
            + (f" SLURM job {job}" if job else " (not a SLURM job)")
            + f", since {holder.get('since')}")


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written this instant, or garbage: judged by its heartbeat alone


def _stale(path: Path, holder: dict) -> bool:
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    if holder.get("host") == socket.gethostname() and "pid" in holder:
        return not _alive(holder)
    return age > STALE_S


def live_holder(folder: Path) -> dict | None:
    """Who holds the cell folder's lock, if a live process does (None: free, or stale)."""
    path = Path(folder) / LOCK_FILE
    holder = _read(path)
    return None if holder is None or _stale(path, holder) else holder


class CellLock:
    """Hold with `with CellLock(folder, label):`; raises CellLockedError naming the holder."""

    def __init__(self, folder: Path, label: str = ""):
        self.path = Path(folder) / LOCK_FILE
        self.label = label or str(folder)
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _holder(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid()),
                "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def _create(self) -> bool:
        mine = self.path.with_name(f"{LOCK_FILE}.new.{socket.gethostname()}.{os.getpid()}")
        mine.write_text(json.dumps(self._holder()))
        try:
            os.link(mine, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # NFS may answer a link it made with an error (a lost reply): its count says
            return os.stat(mine).st_nlink == 2
        finally:
            mine.unlink(missing_ok=True)

    def _break(self, holder: dict) -> None:
        # Renamed aside before removal: of two processes breaking the same stale lock,
        # one rename wins; the other finds the file gone (or a fresh lock, left alone).
        aside = self.path.with_name(f"{LOCK_FILE}.stale.{socket.gethostname()}.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if _read(aside) != holder:  # a fresh lock slipped in between: give it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="cell-lock")
                self._beat.start()
                return
            holder = _read(self.path)
            if holder is None:
                continue  # released meanwhile
            if not _stale(self.path, holder):
                raise CellLockedError(f"{self.label} is being written by another process: {describe(holder)} "
                                      f"(lock file {self.path}); not starting a second writer")
            self._break(holder)
        raise CellLockedError(f"{self.label}: could not take the lock {self.path} (contended)")

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        holder = _read(self.path)
        if holder and holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)  # only our own: a lock broken and retaken by another stays

    def __enter__(self) -> "CellLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

