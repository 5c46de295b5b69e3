"""The study as a Snakemake DAG, run for real through Snakemake's CLI on the smoke grid:
complete -> nothing to do; delete a level -> that chain re-runs from there; change a
hyperparameter -> only that benchmark re-runs; kill and restart -> same tables."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from prunegen.records import schemas
from tests.helpers import REPO, SMOKE, snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]
WILDCARDS = re.compile(r"wildcards: benchmark=(\S+), arm=(\S+), noise=(\S+), seed=(\d+), level=(\d+)")


def two_benchmark_study(path, **train_changes):
    """smoke.yaml with a second benchmark, at one noise level (22 cells)."""
    raw = yaml.safe_load(SMOKE.read_text())
    first = raw["benchmarks"]["digits-mlp"]
    second = yaml.safe_load(yaml.safe_dump(first))
    second["model"]["hidden"] = [48, 24]
    first["train"].update(train_changes)
    raw["benchmarks"]["digits-mlp-narrow"] = second
    raw["noise"] = [0.2]
    path.write_text(yaml.safe_dump(raw))
    return path




def planned(workdir, study):
    """(cells, other rules) a dry run would run."""
    out = snakemake(workdir, study, "-n")
    text = out.stdout + out.stderr
    cells = {(b, a, float(n), int(s), int(lv)) for b, a, n, s, lv in WILDCARDS.findall(text)}
    rules = set(re.findall(r"^rule (\w+):", text, re.M)) - {"cell"}
    return cells, rules


def tables(workdir):
    root = workdir / "results" / "smoke" / "tables"
    out = {}
    for kind in ("summary", "history", "headline", "optimal"):
        t = pq.read_table(root / f"{kind}.parquet")
        out[kind] = t.drop([c for c in t.column_names if c in schemas.WALL_CLOCK
                            or c.startswith("wall_seconds")])
    return out


@pytest.fixture(scope="module")
def complete(tmp_path_factory):
    """One uninterrupted run of the two-benchmark smoke grid."""
    workdir = tmp_path_factory.mktemp("complete")
    study = two_benchmark_study(workdir / "study.yaml")
    snakemake(workdir, study)
    return workdir, study


def test_complete_run_leaves_nothing_to_do_and_one_table_row_per_cell(complete):
    workdir, study = complete
    cells, rules = planned(workdir, study)
    assert cells == set() and rules == set()
    summary = pq.read_table(workdir / "results/smoke/tables/summary.parquet").to_pandas()
    assert len(summary) == 22 and not summary.duplicated(["benchmark", "arm", "noise", "seed", "level"]).any()
    for arm, group in summary.groupby("arm"):
        expected = [0] if arm == "dense" else [1, 2]
        assert sorted(group.level.unique()) == expected
    figures = workdir / "results/smoke/figures"
    assert (figures / "test_error.png").stat().st_size > 0
    assert (workdir / "results/smoke/logs/cells").is_dir()
    assert list((workdir / "results/smoke/benchmarks/cells").rglob("*.tsv"))


def test_deleting_one_level_reruns_it_the_rest_of_its_chain_and_the_merge(complete, tmp_path):
    src, _ = complete
    workdir = tmp_path / "copy"
    shutil.copytree(src, workdir, symlinks=True)
    study = workdir / "study.yaml"
    cell_dir = workdir / "results/smoke/cells/benchmark=digits-mlp/arm=imp/noise=0.2/seed=0/level=1"
    shutil.rmtree(cell_dir)
    cells, rules = planned(workdir, study)
    # imp level 1 and 2 (its chain), and random 1, 2: random level k reads imp level k's masks
    expected = {("digits-mlp", arm, 0.2, 0, k) for arm in ("imp", "random") for k in (1, 2)}
    assert cells == expected
    assert rules == {"merge", "figures", "all"}
    snakemake(workdir, study)
    assert planned(workdir, study) == (set(), set())


def test_changing_one_hyperparameter_reruns_only_that_benchmark(complete, tmp_path):
    src, _ = complete
    workdir = tmp_path / "copy"
    shutil.copytree(src, workdir, symlinks=True)
    study = two_benchmark_study(workdir / "study.yaml", lr=0.04)
    cells, rules = planned(workdir, study)
    assert {c[0] for c in cells} == {"digits-mlp"}
    assert len(cells) == 11  # every cell of that benchmark: dense + 5 arms x 2 levels
    assert "merge" in rules


def test_killed_run_restarted_finishes_with_identical_tables(complete, tmp_path):
    workdir = tmp_path / "killed"
    workdir.mkdir()
    study = two_benchmark_study(workdir / "study.yaml")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "--config", f"study={study}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    cells = workdir / "results/smoke/cells"
    deadline = time.time() + 300
    while len(list(cells.rglob("cell.json"))) < 6:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its running jobs, mid-training
    proc.wait()
    done_before = len(list(cells.rglob("cell.json")))
    assert done_before < 22
    snakemake(workdir, study, "--unlock")  # a killed Snakemake leaves its lock behind
    restarted = snakemake(workdir, study)
    # Only what was incomplete ran again. Up to --cores jobs may have finished their
    # records as the kill landed, before Snakemake could note it: those re-run too.
    ran = restarted.stderr.count("rule cell:")
    assert 22 - done_before <= ran <= 22 - done_before + 2
    assert len(list(cells.rglob("cell.json"))) == 22
    a, b = tables(complete[0]), tables(workdir)
    for kind in a:  # NaN-aware and exact
        pd.testing.assert_frame_equal(a[kind].to_pandas(), b[kind].to_pandas(), check_exact=True, obj=kind)


def test_a_bad_study_fails_the_dry_run_naming_the_field(tmp_path):
    raw = yaml.safe_load(SMOKE.read_text())
    raw["benchmarks"]["digits-mlp"]["train"]["momentum"] = 1.5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    out = snakemake(tmp_path, bad, "-n", check=False)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "benchmarks.digits-mlp.train.momentum" in text and "1.5" in text
    assert not (tmp_path / "results").exists()


def test_results_page_of_a_two_benchmark_study_judges_each_benchmark_on_its_own_rows(complete, tmp_path):
    """`prunegen results` on the two-benchmark grid Snakemake ran: one section and one set of
    verdicts per benchmark, and every number in a benchmark's section is in that benchmark's
    rows of the page's tables."""
    from tests.helpers import page_numbers_in_tables

    workdir, study = complete
    out = tmp_path / "page" / "results.md"
    run = subprocess.run([sys.executable, "-m", "prunegen.cli", "results", "--study", str(study), "--results-root",
                          str(workdir / "results"), "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    tables_dir = out.parent / "results" / "smoke" / "tables"
    verdicts = pd.read_parquet(tables_dir / "verdicts.parquet")
    assert set(verdicts["benchmark"]) == {"digits-mlp", "digits-mlp-narrow"}
    for b in ("digits-mlp", "digits-mlp-narrow"):
        assert text.count(f"## Benchmark `{b}`") == 1
        assert sum(line.startswith(f"| `{b}` | ") for line in text.splitlines()) == 8  # one row per claim
        section = text.split(f"## Benchmark `{b}`")[1].split("\n## ")[0]
        assert len(re.findall(r"\d+\.\d{2}(?:%| pt)", section)) > 20
        assert page_numbers_in_tables(text, tables_dir, b) == []


def test_the_compute_table_has_every_cells_job_and_the_report_shows_it(complete, tmp_path):
    workdir, study = complete
    compute = pq.read_table(workdir / "results/smoke/tables/compute.parquet").to_pandas()
    summary = pq.read_table(workdir / "results/smoke/tables/summary.parquet").to_pandas()
    keys = ["benchmark", "arm", "noise", "seed", "level"]
    assert compute[keys].equals(summary[keys])  # one row per merged cell, same order
    assert (compute["job_seconds"] > 0).all() and (compute["max_rss_mb"] > 0).all()
    assert compute["cpu_seconds"].notna().all()
    assert compute["gpu_mem_used_max_mb"].isna().all()  # no GPU here: nothing sampled
    # the job took longer than the training inside it (process start, imports, records)
    assert (compute["job_seconds"] >= summary["wall_seconds"]).all()
    report = tmp_path / "report.html"
    snakemake(workdir, study, "--report", str(report))
    text = report.read_text()
    assert "compute.html" in text and "What the cell jobs cost" in text
