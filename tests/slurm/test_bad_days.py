"""A cluster with bad days (issue 30), on the real test cluster through profiles/slurm: a
cell that outgrows its memory request is killed by SLURM (the cluster enforces memory:
tests/slurm/start.sh) and goes again with more; a node whose jobs fail at start (node2,
broken by the cluster's TaskProlog) is excluded after its failures and named at the end.
Read back from SLURM (sacct, the submitted scripts) and from the Parquet records."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.slurm import cluster
from tests.slurm.helpers import REPO, assert_tables_equal, reference_run, run_smk, smk_cmd

sys.path.insert(0, str(REPO / "benchmarks"))
import scale  # noqa: E402  (its study: N one-epoch digits cells)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def acct():
    return cluster.require(accounting=True)


def sacct_rows(workdir: Path) -> list[dict]:
    """Every run of this test's jobs (-D: a requeued job's earlier runs too), oldest first."""
    out = subprocess.run(["sacct", "-X", "-D", "-n", "-P", "-S", "now-1days",
                          "-o", "JobID,State,ReqMem,NodeList,WorkDir,Comment"],
                         capture_output=True, text=True, check=True).stdout
    keys = ("id", "state", "mem", "nodes", "workdir", "comment")
    rows = [dict(zip(keys, line.split("|", 5))) for line in out.splitlines()]
    return [r for r in rows if r["workdir"] == str(workdir)]


def write_study(tmp_path: Path, cells: int, mem_mb: int, epochs: int = 1) -> Path:
    spec = scale.study(cells)
    spec["benchmarks"]["digits-tiny"]["resources"]["mem_mb"] = mem_mb
    spec["benchmarks"]["digits-tiny"]["train"]["epochs"] = epochs
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("workers", [0, 1], ids=["job-per-cell", "worker-jobs"])
def test_a_cell_past_its_memory_is_killed_and_succeeds_with_more(acct, tmp_path, workers):
    """Done 1: a cell asks 150 MB, which the executor raises to its floor of 256 MB
    (--prunegen-min-mem-mb), still far less than a cell job holds (submitit's Python,
    Snakemake and torch: ~500 MB), so SLURM kills it for memory; the retry asks 4x (the
    factor given here) and the cell completes, with the records of a local run. (SLURM
    samples memory every 2 s, and from a step's start only after a while: the cell trains
    long enough to be seen, some 10 s; at 60 epochs a fast run finished first.)"""
    study = write_study(tmp_path, 1, 150, epochs=300)
    results = tmp_path / "results"
    cmd = smk_cmd(tmp_path, "merge", "--config", f"study={study}", f"results_root={results}",
                  "--prunegen-oom-factor", "4", "--prunegen-mem-ceiling-mb", "1200", workers=workers,
                  keep_files_days=0)
    rc, out = run_smk(cmd, tmp_path / "smk.log", timeout=600)
    assert rc == 0, out[-4000:]
    assert (results / "scale/cells/benchmark=digits-tiny/arm=dense/noise=0.0/seed=0/level=0/cell.json").exists()
    rows = [r for r in sacct_rows(tmp_path) if r["comment"].startswith(("cell", "prunegen-worker"))]
    assert [r["mem"] for r in rows] == ["256M", "1G"], rows  # killed at 256 MB, done at 4x (sacct: 1024M is "1G")
    assert rows[0]["state"] in ("FAILED", "OUT_OF_MEMORY") and rows[1]["state"] == "COMPLETED", rows
    if workers:
        assert re.search(r"out of memory at 256 MB in worker job \S+: again with 1024 MB", out), out[-3000:]
    else:
        assert "out of memory at 256 MB: retried with 1024 MB" in out, out[-3000:]
        # the retry was the executor's own, not one of Snakemake's --retries
        assert "cause: memory" in out
    ref = tmp_path / "ref" / "results"
    reference_run(study, ref)
    assert_tables_equal(results / "scale", ref / "scale")
    # Item 4: the files of what succeeded are gone as the run ends; the failure's are kept.
    [run] = (tmp_path / ".snakemake/submitit").iterdir()
    killed, done = rows[0]["id"], rows[1]["id"]
    assert sorted(p.name for p in run.glob(f"{killed}_*")) == [f"{killed}_0_log.err", f"{killed}_0_log.out",
                                                              f"{killed}_submission.sh", f"{killed}_submitted.pkl"]
    assert not list(run.glob(f"{done}_*")), sorted(p.name for p in run.iterdir())
    archive = results / "scale/logs/cells" / f"done-{run.name}.tar.gz"
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["benchmark=digits-tiny/arm=dense/noise=0.0/seed=0/level=0.log"]
    assert not list((results / "scale/logs/cells").rglob("*.log"))


@pytest.mark.parametrize("workers", [0, 4], ids=["job-per-cell", "worker-jobs"])
def test_a_broken_node_is_excluded_and_named(acct, tmp_path, workers):
    """Done 2: partition "flaky" has two nodes; node2's jobs fail at start. The study still
    completes: node2 is excluded after two node-level failures (sbatch --exclude=node2 on
    every later job) and the run names it at its end."""
    cells = 6
    study = write_study(tmp_path, cells, 1500)
    results = tmp_path / "results"
    cmd = smk_cmd(tmp_path, "merge", "--config", f"study={study}", f"results_root={results}",
                  "--prunegen-partition", "flaky", "--prunegen-node-failures", "2", workers=workers)
    with cluster.broken_node("node2"):
        rc, out = run_smk(cmd, tmp_path / "smk.log", timeout=900)
    assert rc == 0, out[-4000:]
    assert len(list((results / "scale/cells").rglob("cell.json"))) == cells
    rows = sacct_rows(tmp_path)
    on_node2 = [r for r in rows if r["nodes"] == "node2"]
    assert len(on_node2) >= 2 and all(r["state"] == "FAILED" for r in on_node2), rows  # the black hole
    assert "excluding node(s) node2 from this run's jobs after 2 node-level failure(s)" in out, out[-3000:]
    assert "excluded node(s) node2 (after 2 node-level failure(s))" in out, out[-3000:]  # the report
    # after the exclusion nothing went to node2: every later script says --exclude=node2
    scripts = sorted((tmp_path / ".snakemake/submitit").rglob("*_submission.sh"), key=lambda p: p.stat().st_mtime)
    excluding = [s for s in scripts if "#SBATCH --exclude=node2" in s.read_text()]
    assert excluding, [s.name for s in scripts]
    first = min(s.stat().st_mtime for s in excluding)
    assert all("#SBATCH --exclude=node2" in s.read_text() for s in scripts if s.stat().st_mtime >= first)
    assert not any("--exclude=None" in s.read_text() for s in scripts)
    ok = [r for r in rows if r["state"] == "COMPLETED" and r["comment"].startswith(("cell", "prunegen-worker"))]
    assert ok and all(r["nodes"] == "localhost" for r in ok), rows
