"""One writer per cell, with real `prunegen run-cell` processes: of two started at once
exactly one trains and the other exits at once naming the holder; a lock left by a
SIGKILLed run does not block the next one, which resumes; the records equal a single run's."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from prunegen.engine import checkpoints
from prunegen.records import layout, schemas, store
from prunegen.study.load import load_study
from tests.helpers import REPO, SMOKE

pytestmark = pytest.mark.slow
# run-cell with every epoch slowed down, so that a second process surely meets a live
# writer (the smoke cell trains in well under a second); records are unaffected
SLOW = """
import sys, time
from prunegen import cli
from prunegen.engine import training
epoch = training.train_epoch
def slow_epoch(*a, **k):
    time.sleep(float(sys.argv[1]))
    return epoch(*a, **k)
training.train_epoch = slow_epoch
sys.exit(cli.main(sys.argv[2:]))
"""


def run_cell(root, slow: float = 0.0) -> subprocess.Popen:
    args = ["run-cell", "--study", str(SMOKE), "--results-root", str(root), "--benchmark", "digits-mlp",
            "--arm", "dense", "--level", "0", "--noise", "0.0", "--seed", "0"]
    cmd = [sys.executable, "-c", SLOW, str(slow), *args] if slow else [sys.executable, "-m", "prunegen.cli", *args]
    return subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cell_dir(root):
    return load_study(SMOKE, {"results_root": str(root)}).cell("digits-mlp", "dense", 0, 0.0, 0).dir


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The cell's records from one uninterrupted run."""
    root = tmp_path_factory.mktemp("single")
    p = run_cell(root)
    assert p.wait() == 0, p.communicate()[1]
    return cell_dir(root)


def assert_same_records(new, old):
    for kind in ("history", "examples", "summary"):
        a, b = (pq.read_table(d / f"{kind}.parquet").to_pandas() for d in (new, old))
        drop = [c for c in a if c in schemas.WALL_CLOCK]
        pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop), check_exact=True, obj=kind)
    for name in ("model.pt", "mask.pt"):
        a, b = (checkpoints.load_torch(d, name) for d in (new, old))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def finish(p: subprocess.Popen, start: float) -> tuple[int, str, float]:
    _, err = p.communicate(timeout=300)
    return p.returncode, err, time.monotonic() - start


def test_two_run_cells_at_once_one_trains_the_other_names_it_and_exits(single, tmp_path):
    start = time.monotonic()
    procs = [run_cell(tmp_path, slow=1.0) for _ in range(2)]  # 3 epochs: the winner trains >= 3 s
    done = {p.pid: None for p in procs}
    while any(v is None for v in done.values()):  # note when each exits
        for p in procs:
            if done[p.pid] is None and p.poll() is not None:
                done[p.pid] = time.monotonic() - start
        time.sleep(0.05)
    results = {p.pid: (p.returncode, p.communicate()[1]) for p in procs}
    winners = [pid for pid, (rc, _) in results.items() if rc == 0]
    assert len(winners) == 1, results
    (winner,), (loser,) = winners, [pid for pid in results if pid not in winners]
    rc, err = results[loser]
    assert rc == 2 and f"host {socket.gethostname()} pid {winner}" in err and "not starting a second writer" in err
    assert done[loser] < done[winner] - 1.5 and done[loser] < 60  # it neither waited for the lock nor trained
    assert "done in" in results[winner][1] and "done in" not in err
    out = cell_dir(tmp_path)
    assert not (out / layout.LOCK_FILE).exists()
    assert_same_records(out, single)


def test_a_lock_left_by_a_sigkilled_run_does_not_block_the_next_which_resumes(single, tmp_path):
    out = cell_dir(tmp_path)
    p = run_cell(tmp_path, slow=1.0)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists():  # mid-training: an epoch done, more to come
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (out / layout.LOCK_FILE).exists() and not (out / "cell.json").exists()

    start = time.monotonic()
    rc, err, _ = finish(run_cell(tmp_path), start)
    assert rc == 0, err
    assert store.read_cell_json(out)["resumed_from"] is not None  # resumed from the killed run's epoch
    assert not (out / layout.LOCK_FILE).exists()
    assert_same_records(out, single)


def test_the_lock_file_is_never_seen_without_its_holder(tmp_path, monkeypatch):
    """A second process reading the lock the instant it appears finds the holder, never an empty
    file (CI once named "host None pid None": the holder was written after the file was made).
    Here the holder takes 0.3 s to describe; a reader polls the lock name the whole time."""
    from prunegen.records.lock import CellLock, _read

    describe = CellLock._holder
    monkeypatch.setattr(CellLock, "_holder", lambda self: time.sleep(0.3) or describe(self))
    path = tmp_path / layout.LOCK_FILE
    seen, stop = [], False

    def poll():
        while not stop:
            holder = _read(path)
            if holder is not None:
                seen.append(holder)
            time.sleep(0.001)

    reader = threading.Thread(target=poll)
    reader.start()
    with CellLock(tmp_path, "cell"):
        time.sleep(0.05)
    stop = True
    reader.join()
    assert seen, "the reader never saw the lock"
    assert all(h.get("pid") == os.getpid() and h.get("host") == socket.gethostname() for h in seen), seen[:3]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no file of the lock's making left behind
