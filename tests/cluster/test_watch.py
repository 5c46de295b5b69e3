"""`prunegen status --watch` on real cell records; SLURM's answers come from a stand-in
here (the real daemons: tests/slurm/test_status_watch.py)."""

import io
import json
import os
import subprocess
import sys

import pytest

from prunegen.cluster import joblog, watch
from prunegen.cluster.slurm.status import Status
from prunegen.engine import checkpoints
from prunegen.records import layout, lock, store
from tests.helpers import run_chain


def _jobs_file(workdir, rows):
    run = workdir / ".snakemake" / "submitit" / "20261202T120000-abcdef"
    run.mkdir(parents=True)
    (run / layout.JOBS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def _fake_checkpoint(cell, cycle_pos, epoch):
    cell.dir.mkdir(parents=True, exist_ok=True)
    checkpoints.save_torch({"fingerprint": cell.hash, "cycle_pos": cycle_pos, "epoch": epoch, "model": {}}, cell.dir / "checkpoint.pt")


def test_each_state_from_records_and_slurm(smoke_study, tmp_path, cell_cache):
    s = smoke_study
    run_chain(s, "imp", 1, 0.0, cache=cell_cache)  # dense L0 and imp L1 complete (real records)
    bm = "digits-mlp"
    # downscaled_extended L2's job trains 2 cycles on top of downscaled L2's one (shared
    # prefix): its checkpoint is in the second, after epoch 1
    running, pending, failed = (s.cell(bm, "downscaled_extended", 2, 0.0, 0), s.cell(bm, "extended", 1, 0.0, 0),
                                s.cell(bm, "random", 1, 0.0, 0))
    _fake_checkpoint(running, 1, 1)
    _jobs_file(tmp_path, [
        {"job_id": "7_0", "label": "cell", "dirs": [str(running.dir)], "stdout": "/l/7_0.out", "stderr": "/l/7_0.err"},
        {"job_id": "7_1", "label": "cell", "dirs": [str(pending.dir)], "stdout": "/l/7_1.out", "stderr": "/l/7_1.err"},
        {"job_id": "8", "label": "cell", "dirs": [str(failed.dir)], "stdout": "/l/8.out", "stderr": "/l/8.err"},
        {"job_id": "9", "label": "cell", "dirs": [str(s.cell(bm, "dense", 0, 0.0, 0).dir)], "stdout": "", "stderr": ""},
    ])
    asked = []

    def poll(ids):
        asked.append(ids)
        return {"7_0": Status("RUNNING", "active", "sacct"), "7_1": Status("PENDING", "active", "sacct", "Resources"),
                "8": Status("FAILED", "failed", "sacct", "exit code 1:0")}

    cells = [c for c in s.cells() if c.noise == 0.0 and c.seed == 0]
    views = {v.cell.relpath: v for v in watch.look(s, cells, joblog.read_jobs(tmp_path), poll)}
    assert asked == [["7_0", "7_1", "8"]]  # complete cells' jobs are not asked about
    assert views[s.cell(bm, "imp", 1, 0.0, 0).relpath].state == "completed"
    assert views[s.cell(bm, "dense", 0, 0.0, 0).relpath].state == "completed"
    r = views[running.relpath]
    epochs = s.benchmarks[bm].train.epochs
    assert (r.state, r.epochs_done, r.epochs, r.job) == ("running", epochs + 1, 2 * epochs, "7_0")
    assert (views[pending.relpath].state, views[pending.relpath].detail) == ("pending", "Resources")
    f = views[failed.relpath]
    assert f.state == "failed" and "FAILED" in f.detail and "/l/8.err" in f.detail
    assert views[s.cell(bm, "downscaled", 1, 0.0, 0).relpath].state == "queued"

    text = watch.render(list(views.values()), watch.seconds_per_epoch(list(views.values())), "12:00:00", True)
    assert f"running  {running.label}: epoch {epochs + 1}/{2 * epochs} (SLURM job 7_0)" in text
    assert f"pending  {pending.label}: Resources (SLURM job 7_1)" in text
    assert f"failed   {failed.label}: FAILED (exit code 1:0); log /l/8.err (SLURM job 8)" in text
    assert "ETA " in text and "ETA unknown" not in text  # measured on the two completed cells


def test_eta_is_epochs_left_at_measured_speed_over_running_cells(smoke_study, cell_cache):
    s = smoke_study
    run_chain(s, "imp", 1, 0.0, cache=cell_cache)
    bm = "digits-mlp"
    cells = [s.cell(bm, "dense", 0, 0.0, 0), s.cell(bm, "imp", 1, 0.0, 0), s.cell(bm, "imp", 2, 0.0, 0)]
    views = watch.look(s, cells, {}, None)
    per_epoch = watch.seconds_per_epoch(views)
    wall = sum(store.read_cell_json(c.dir)["wall_seconds"] for c in cells[:2])
    epochs = s.benchmarks[bm].train.epochs
    assert per_epoch[bm] == pytest.approx(wall / (2 * epochs))
    assert watch.eta_seconds(views, per_epoch) == pytest.approx(epochs * wall / (2 * epochs))
    assert watch.eta_seconds(views[:2], per_epoch) == 0.0
    assert watch.eta_seconds(watch.look(s, cells[2:], {}, None), {}) is None  # nothing measured yet


def test_a_live_local_writer_is_running_and_a_dead_one_is_not(smoke_study):
    s = smoke_study
    cell = s.cell("digits-mlp", "dense", 0, 0.0, 0)
    cell.dir.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = {"host": os.uname().nodename, "pid": sleeper.pid, "start": lock._start_time(sleeper.pid)}
        (cell.dir / layout.LOCK_FILE).write_text(json.dumps(holder))
        assert watch.look(s, [cell], {}, None)[0].state == "running"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert watch.look(s, [cell], {}, None)[0].state == "queued"


def test_watch_ends_when_nothing_is_left_or_nothing_moves(smoke_study, tmp_path, cell_cache):
    s = smoke_study
    run_chain(s, "imp", 1, 0.0, cache=cell_cache)
    done = [s.cell("digits-mlp", "dense", 0, 0.0, 0), s.cell("digits-mlp", "imp", 1, 0.0, 0)]
    out = io.StringIO()
    watch.watch(s, done, workdir=tmp_path, out=out, sleep=lambda _: pytest.fail("no refresh needed"))
    assert out.getvalue().count("prunegen status --watch") == 1 and "done" in out.getvalue()

    t = [0.0]
    out = io.StringIO()
    waiting = done + [s.cell("digits-mlp", "imp", 2, 0.0, 0)]

    def sleep(dt):
        t[0] += dt

    watch.watch(s, waiting, workdir=tmp_path, out=out, interval_s=5, patience_s=12, clock=lambda: t[0], sleep=sleep)
    assert out.getvalue().count("prunegen status --watch") == 4  # t = 0, 5, 10, 15 (>= 12: stop)
    assert "wait for a Snakemake run" in out.getvalue()


def test_cells_of_a_worker_job_that_goes_on_show_their_own_state(smoke_study, tmp_path):
    """A warm worker job (docs/cluster.md section 5) runs many cells: while it runs, a cell
    of it that failed shows failed, one put back in the queue shows queued, and the one it
    holds shows running."""
    s = smoke_study
    bm = "digits-mlp"
    running, failed, back = (s.cell(bm, "dense", 0, 0.0, 0), s.cell(bm, "downscaled", 1, 0.0, 0),
                             s.cell(bm, "downscaled", 2, 0.0, 0))
    _fake_checkpoint(running, 0, 2)
    _jobs_file(tmp_path, [
        {"job_id": "12_0", "label": "prunegen worker", "dirs": [], "stdout": "/l/12_0.out", "stderr": "/l/12_0.err"},
        {"job_id": "12_0", "label": "cell", "dirs": [str(failed.dir)], "stdout": "", "stderr": ""},
        {"job_id": "11_3", "label": "cell", "dirs": [str(back.dir)], "stdout": "", "stderr": ""},
        {"job_id": "12_0", "label": "cell", "dirs": [str(running.dir)], "stdout": "", "stderr": ""},
        {"job_id": "12_0", "label": "cell", "dirs": [str(failed.dir)], "outcome": "failed",
         "detail": "exit 2: prunegen: error: bad things"},
        {"job_id": "11_3", "label": "cell", "dirs": [str(back.dir)], "outcome": "queued",
         "detail": "its worker job 11_3 ended NODE_FAIL while running it"},
    ])

    def poll(ids):
        return {"12_0": Status("RUNNING", "active", "sacct"), "11_3": Status("NODE_FAIL", "failed", "sacct")}

    views = {v.cell.relpath: v for v in watch.look(s, [running, failed, back], joblog.read_jobs(tmp_path), poll)}
    assert (views[running.relpath].state, views[running.relpath].job, views[running.relpath].epochs_done) == \
        ("running", "12_0", 2)
    f = views[failed.relpath]
    assert (f.state, f.job) == ("failed", "12_0") and "bad things" in f.detail
    b = views[back.relpath]
    assert b.state == "queued" and "NODE_FAIL" in b.detail
