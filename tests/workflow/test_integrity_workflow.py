"""Corrupt records through Snakemake: a dry run changes nothing and lists exactly the
corrupt cell and the cells after it in its chain; a real run sets the cell aside,
re-runs those cells and nothing else, and repairs the records and tables."""

import os
import re
import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from prunegen.analysis import scan
from prunegen.engine import checkpoints
from prunegen.records import layout, schemas
from prunegen.study.load import load_study
from tests.helpers import FILES, SMOKE, corrupt, run_chain
from tests.helpers import snakemake as run_snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]
CELLS = "results/smoke/cells/benchmark=digits-mlp/arm={arm}/noise=0.0/seed=0/level={level}"
SUMMARY = "results/smoke/tables/summary.parquet"


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """dense, imp and extended to level 2 at one noise (5 cells), complete."""
    workdir = tmp_path_factory.mktemp("grid")
    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(arms=["dense", "imp", "extended"], noise=[0.0])
    (workdir / "study.yaml").write_text(yaml.safe_dump(raw))
    study = load_study(workdir / "study.yaml", {"results_root": str(workdir / "results")})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the cell jobs run (OMP_NUM_THREADS=1): the same floating-point sums
    try:
        for arm in ("imp", "extended"):
            run_chain(study, arm, 2, 0.0)
    finally:
        torch.set_num_threads(threads)
    return workdir


def copy_of(grid, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(grid, workdir)  # copy2: mtimes kept, as records were written
    return workdir


def snakemake(workdir, *args) -> str:
    """The workflow on the study in `workdir`: its output, which names the jobs."""
    out = run_snakemake(workdir, workdir / "study.yaml", *args)
    return out.stdout + out.stderr


def cell_jobs(text):
    """(arm, level) of every `cell` job in Snakemake's job list."""
    blocks = re.findall(r"^(?:local)?rule cell:\n(.*?)(?=^\S|\Z)", text, re.M | re.S)
    return {(m.group(1), int(m.group(2))) for b in blocks
            for m in [re.search(r"wildcards: .*arm=(\w+), .*level=(\d+)", b)]}


def assert_same_tensors(new, old):
    """model.pt and mask.pt hold equal tensors (their zip bytes name the temporary file)."""
    for name in ("model.pt", "mask.pt"):
        a, b = (checkpoints.load_torch(d, name) for d in (new, old))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (new / name)


def tree(root):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", FILES)
def test_a_dry_run_lists_the_corrupt_cell_and_its_chain_and_changes_nothing(grid, tmp_path, name):
    """A truncated copy in imp level 1 and a garbled one in extended level 1: each chain
    re-runs from there (both levels), dense does not; not a byte nor an mtime changes."""
    workdir = copy_of(grid, tmp_path)
    truncated, garbled = (workdir / CELLS.format(arm=arm, level=1) / name for arm in ("imp", "extended"))
    corrupt(truncated, "truncated")
    corrupt(garbled, "garbled")
    before = tree(workdir / "results")
    out = snakemake(workdir, "-n")
    assert cell_jobs(out) == {(arm, level) for arm in ("imp", "extended") for level in (1, 2)}
    assert f"corrupt record {truncated.relative_to(workdir)}" in out
    assert f"corrupt record {garbled.relative_to(workdir)}" in out
    assert tree(workdir / "results") == before


def test_a_copy_that_lost_its_mtimes_is_checksummed_and_not_re_run(grid, tmp_path):
    workdir = copy_of(grid, tmp_path)
    for p in (workdir / "results").rglob("*"):  # as a copy without -p leaves them (one time: no
        os.utime(p, (1e9 + 7e8, 1e9 + 7e8))      # file newer than another, which Snakemake would re-run)
    out = snakemake(workdir, "-n")
    assert cell_jobs(out) == set() and "corrupt" not in out


def test_a_real_run_repairs_a_truncated_model_and_only_its_chain(grid, tmp_path):
    workdir = copy_of(grid, tmp_path)
    imp1 = workdir / CELLS.format(arm="imp", level=1)
    corrupt(imp1 / "model.pt", "truncated")
    untouched = {p: p.stat().st_mtime_ns for arm, level in (("dense", 0), ("extended", 1), ("extended", 2))
                 for p in (workdir / CELLS.format(arm=arm, level=level)).iterdir()}
    out = snakemake(workdir, SUMMARY)  # the merge: cells and tables, no figures
    assert f"{imp1 / 'cell.json'}".endswith(re.search(r"(\S+cell\.json): set aside", out).group(1))
    assert cell_jobs(out) == {("imp", 1), ("imp", 2)}
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched

    study = load_study(workdir / "study.yaml", {"results_root": str(workdir / "results")})
    status = scan.status(study, verify=True)
    assert (status.complete == status.cells).all() and not (imp1 / layout.SET_ASIDE).exists()
    for level in (1, 2):  # the re-run's records are the first run's (CPU: bit-identical)
        new, old = (root / CELLS.format(arm="imp", level=level) for root in (workdir, grid))
        assert_same_tensors(new, old)
        for kind in ("history", "examples", "summary"):
            a, b = (pq.read_table(d / f"{kind}.parquet").to_pandas() for d in (new, old))
            drop = [c for c in a if c in schemas.WALL_CLOCK]
            pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop), check_exact=True)
    table = pd.read_parquet(workdir / SUMMARY).drop(columns="wall_seconds")  # every cell, as first run
    first = pd.concat([pq.read_table(grid / CELLS.format(arm=a, level=k) / "summary.parquet").to_pandas()
                       for a, k in zip(table.arm, table.level)], ignore_index=True)
    pd.testing.assert_frame_equal(table[first.columns.drop("wall_seconds")], first.drop(columns="wall_seconds"),
                                  check_exact=True)
    assert cell_jobs(snakemake(workdir, "-n", SUMMARY)) == set()  # repaired: nothing left to do
