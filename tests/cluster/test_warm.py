"""Warm processes (issue 27 item 1): a queue of cells in a folder, workers that run cell
after cell, and the local pool a Snakemake run starts. Real processes, real cells."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from prunegen.cluster import pool as pool_mod
from prunegen.cluster.queue import ENV, Queue, run_through
from prunegen.records import layout
from tests.helpers import REPO, SMOKE, snakemake

sys.path.insert(0, str(REPO / "benchmarks"))
import scale  # noqa: E402  (its one-epoch digits study: cells with no parents)

PY = sys.executable
WALL = ("wall_seconds", "seconds")


def _claimer(root, name, out, start):
    q = Queue(root)
    start.wait()  # all at once, on the same oldest tasks
    got = []
    while (task := q.claim(name)) is not None:
        got.append(task["id"])
    out.put(got)


def test_the_queue_gives_each_task_to_exactly_one_of_several_claimers(tmp_path):
    q = Queue(tmp_path / "q")
    ids = [q.put({"argv": ["x", str(i)]}) for i in range(1000)]
    ctx = multiprocessing.get_context("spawn")
    out, start = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_claimer, args=(str(q.root), f"w{i}", out, start)) for i in range(4)]
    for p in procs:
        p.start()
    time.sleep(2)  # all four imported and waiting
    start.set()
    got = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    claimed = [t for g in got for t in g]
    assert sorted(claimed) == sorted(ids)  # every task once: none lost, none twice
    assert q.todo() == [] and sum(len(v) for v in q.claims().values()) == 1000
    assert sum(1 for g in got if g) >= 2  # they did race


def test_a_dead_workers_tasks_are_put_back_or_failed_naming_why(tmp_path):
    q = Queue(tmp_path / "q")
    a, b = q.put({"argv": ["a"]}), q.put({"argv": ["b"]})
    assert q.claim("w1")["id"] == a and q.claim("w2")["id"] == b
    assert q.orphans("w1", "node died", put_back=True) == []
    assert q.todo() == [a] and q.claim("w3")["workers_lost"] == 1  # back, counted
    assert q.orphans("w2", "worker w2 ended OUT_OF_MEMORY", put_back=False) == [b]
    assert q.result(b)["rc"] == 1 and "OUT_OF_MEMORY" in q.result(b)["error"]
    # a cell that brings down every worker it runs on fails with the third
    assert q.orphans("w3", "node died", put_back=True) == [] and q.claim("w3")["workers_lost"] == 2
    assert q.orphans("w3", "node died", put_back=True) == [a] and q.result(a)["workers_lost"] == 3


def _study(tmp_path, n, **train) -> Path:
    raw = scale.study(n)
    raw["benchmarks"]["digits-tiny"]["train"].update(train)
    raw["results_root"] = str(tmp_path / "results")
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _argv(study: Path, seed: int, arm: str = "dense") -> list[str]:
    return ["run-cell", "--study", str(study), "--benchmark", "digits-tiny", "--arm", arm, "--level", "0",
            "--noise", "0.0", "--seed", str(seed)]


def _worker(q: Queue, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    return subprocess.Popen([PY, "-m", "prunegen.cli", "worker", "--queue", str(q.root), "--name", "w",
                             "--idle-s", "1", *extra], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _own_process_env() -> dict:
    """A cell job's environment (workflow/rules/cells.smk): one thread, as the tasks ask."""
    return {**{k: v for k, v in os.environ.items() if k != ENV}, "OMP_NUM_THREADS": "1"}


def _records(cell_dir: Path) -> dict:
    out = {}
    for name in ("summary", "history", "examples"):
        df = pd.read_parquet(cell_dir / f"{name}.parquet")
        out[name] = df.drop(columns=[c for c in WALL if c in df.columns])
    out["model"] = torch.load(cell_dir / "model.pt")
    return out


def _assert_same(a: dict, b: dict) -> None:
    for name in ("summary", "history", "examples"):
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_a_worker_runs_cells_in_turn_a_failing_cell_fails_alone_and_records_match_a_process_of_its_own(tmp_path):
    study = _study(tmp_path / "warm", 3)
    q = Queue(tmp_path / "q")
    good0 = q.put({"argv": _argv(study, 0), "threads": 1})
    bad = q.put({"argv": _argv(study, 1, arm="no_such_arm"), "threads": 1})
    crash = q.put({"argv": _argv(study, 2)[:-2] + ["--seed", "banana"], "threads": 1})  # argparse exits
    good2 = q.put({"argv": _argv(study, 2), "threads": 1})
    w = _worker(q)
    out, _ = w.communicate(timeout=300)
    assert w.returncode == 0, out
    assert "4 cell(s) run" in out
    assert q.result(good0)["rc"] == 0 and q.result(good2)["rc"] == 0
    assert q.result(bad)["rc"] == 2 and "no_such_arm" in q.result(bad)["error"]
    assert q.result(crash)["rc"] == 2 and "banana" in q.result(crash)["error"]
    assert q.result(good2)["cells_before"] == 3 and q.result(good2)["pid"] == q.result(good0)["pid"]
    # the same cells, each in a process of its own
    cold = _study(tmp_path / "cold", 3)
    for seed in (0, 2):
        p = subprocess.run([PY, "-m", "prunegen.cli", *_argv(cold, seed)], cwd=REPO, capture_output=True, text=True,
                           env=_own_process_env())
        assert p.returncode == 0, p.stderr
        cell = f"cells/benchmark=digits-tiny/arm=dense/noise=0.0/seed={seed}/level=0"
        _assert_same(_records(tmp_path / "warm/results/scale" / cell), _records(tmp_path / "cold/results/scale" / cell))
        rel = cell.removeprefix("cells/")
        assert layout.warm_json(tmp_path / "warm/results/scale", rel).is_file()  # its cost, as a warm process saw it
        assert not layout.warm_json(tmp_path / "cold/results/scale", rel).exists()


def test_a_workers_memory_does_not_grow_over_100_cells(tmp_path):
    n = 110
    study = _study(tmp_path, n)
    q = Queue(tmp_path / "q")
    ids = [q.put({"argv": _argv(study, s), "threads": 1}) for s in range(n)]
    w = _worker(q)
    out, _ = w.communicate(timeout=900)
    assert w.returncode == 0, out
    rss = [q.result(t)["rss_mb"] for t in ids]
    assert all(q.result(t)["rc"] == 0 for t in ids)
    grown = rss[-1] - rss[9]
    print(f"\nworker RSS after cell 10: {rss[9]:.1f} MB, after cell {n}: {rss[-1]:.1f} MB ({grown:+.1f} MB)")
    assert grown < 8, rss  # a leak of one cell's model, data or records per cell would show here


def test_a_stopped_cell_checkpoints_in_its_worker_and_resumes_to_the_same_records(tmp_path):
    """The job of a warm cell is killed (Ctrl-C, SLURM): its worker stops the cell at the next
    step, after its checkpoint, and the next run resumes it to identical records."""
    study = _study(tmp_path / "warm", 1, epochs=60)
    q = Queue(tmp_path / "q")
    w = _worker(q, "--idle-s", "60")
    cell = tmp_path / "warm/results/scale/cells/benchmark=digits-tiny/arm=dense/noise=0.0/seed=0/level=0"
    env_argv = _argv(study, 0)
    # The client in the main thread (it installs signal handlers); a thread sends it SIGTERM
    # once the cell has written its first checkpoint, as Snakemake would on Ctrl-C.
    def cancel_when_checkpointed():
        deadline = time.monotonic() + 120
        while not (cell / "checkpoint.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    timer = threading.Thread(target=cancel_when_checkpointed, daemon=True)
    timer.start()
    old = signal.getsignal(signal.SIGTERM)
    try:
        rc = run_through(q.root, env_argv, 1, out=open(os.devnull, "w"))
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
            signal.signal(sig, old if sig == signal.SIGTERM else signal.default_int_handler
                          if sig == signal.SIGINT else signal.SIG_DFL)
    assert rc == 128 + signal.SIGTERM
    assert (cell / "checkpoint.pt").exists() and not (cell / "cell.json").exists()
    assert w.poll() is None  # the worker lives on: it was the cell that stopped
    assert run_through(q.root, env_argv, 1, out=open(os.devnull, "w")) == 0
    q.stop()
    w.communicate(timeout=60)
    assert json.loads((cell / "cell.json").read_text())["resumed_from"] is not None
    cold = _study(tmp_path / "cold", 1, epochs=60)
    p = subprocess.run([PY, "-m", "prunegen.cli", *_argv(cold, 0)], cwd=REPO, capture_output=True, text=True,
                       env=_own_process_env())
    assert p.returncode == 0, p.stderr
    _assert_same(_records(cell), _records(tmp_path / "cold/results/scale/cells/benchmark=digits-tiny/arm=dense/noise=0.0/seed=0/level=0"))


def test_the_pool_fails_the_cell_of_a_killed_worker_naming_it_and_goes_on_with_a_fresh_one(tmp_path, monkeypatch):
    study = _study(tmp_path, 2, epochs=400)
    monkeypatch.chdir(REPO)
    pool = pool_mod.Pool(tmp_path / "q", max_workers=1).start()
    try:
        assert os.environ[ENV] == str(pool.q.root)
        results: dict[int, int] = {}

        def client(seed):
            results[seed] = run_through(pool.q.root, _argv(study, seed), 1, out=open(os.devnull, "w"))

        t0 = threading.Thread(target=client, args=(0,))
        t0.start()
        deadline = time.monotonic() + 120
        while not pool.q.claims() and time.monotonic() < deadline:
            time.sleep(0.05)
        (worker, proc), = pool.procs.items()
        proc.kill()  # as the kernel's OOM killer would
        t0.join(60)
        assert results[0] == 1
        err = pool.q.result(next(iter(os.listdir(pool.q.root / "done"))).removesuffix(".json"))["error"]
        assert worker in err and "SIGKILL" in err
        t1 = threading.Thread(target=client, args=(1,))
        t1.start()
        t1.join(300)
        assert results[1] == 0 and pool.started == 2  # a fresh worker ran the next cell
    finally:
        pool.close()
    assert not pool.q.root.exists() and ENV not in os.environ


@pytest.mark.workflow
@pytest.mark.slow
def test_a_local_run_uses_warm_processes_and_gives_the_tables_of_one_process_per_cell(tmp_path):
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    for d, extra in ((warm, ()), (cold, ("warm=false",))):
        d.mkdir()
        snakemake(d, SMOKE, config=(f"results_root={d}/results", *extra))
    costs = [pd.read_json(p, typ="series") for p in (warm / "results/smoke/benchmarks").rglob("*.warm.json")]
    cells = list((warm / "results/smoke/cells").rglob("cell.json"))
    assert len(costs) == len(cells) > 0
    assert len({c["pid"] for c in costs}) <= 2  # --cores 2: at most two processes ran them all
    assert max(c["cells_before"] for c in costs) >= len(cells) // 2 - 1
    assert not list((cold / "results/smoke/benchmarks").rglob("*.warm.json"))
    for t in ("summary", "history", "headline", "optimal"):
        a, b = (pd.read_parquet(d / "results/smoke/tables" / f"{t}.parquet") for d in (warm, cold))
        drop = [c for c in a.columns if c in WALL or c.startswith("wall_seconds")]
        pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop), check_exact=True, obj=t)
    compute = pd.read_parquet(warm / "results/smoke/tables/compute.parquet")
    assert set(compute["process"]) == {"warm"}
    assert set(pd.read_parquet(cold / "results/smoke/tables/compute.parquet")["process"]) == {"own"}
    assert not (warm / ".snakemake" / "prunegen-warm").exists() or not any((warm / ".snakemake/prunegen-warm").iterdir())


def test_a_worker_with_two_slots_runs_two_cells_at_once_each_in_its_own_process(tmp_path):
    """Several cells per GPU (issue 27 item 2): `prunegen worker --slots 2` runs two worker
    processes side by side (under CUDA MPS where the job has a GPU; here none: time-sliced)."""
    study = _study(tmp_path, 4, epochs=60)
    q = Queue(tmp_path / "q")
    ids = [q.put({"argv": _argv(study, s), "threads": 1}) for s in range(4)]
    w = _worker(q, "--slots", "2", "--name", "job9")
    out, _ = w.communicate(timeout=600)
    assert w.returncode == 0, out
    assert "job9: 2 slots" in out and "no MPS" in out
    res = [q.result(t) for t in ids]
    assert all(r["rc"] == 0 for r in res), res
    assert {r["worker"] for r in res} == {"job9-0", "job9-1"} and len({r["pid"] for r in res}) == 2
    a, b = sorted(res, key=lambda r: r["started"])[:2]
    assert b["started"] < a["ended"]  # the first two cells overlapped in time
