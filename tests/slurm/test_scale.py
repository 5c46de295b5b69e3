"""The scale benchmark (benchmarks/scale.py, issue 17 item 7) in small, on the test cluster:
its figures are produced and consistent, and the executor's call counts do not grow with
the jobs: one sbatch per batch of ready jobs (the cells' array, then merge), at most one
sacct plus one squeue call per status poll. Times are reported, never asserted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.slurm import cluster

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import scale  # noqa: E402

CELLS = 6


@pytest.mark.slurm
def test_scale_benchmark_small(tmp_path):
    cluster.require(accounting=True)  # skips where SLURM cannot start; fails under CI=true
    res = scale.main(["--cells", str(CELLS), "--poll-s", "2", "--out", str(tmp_path)])
    assert res["cells_complete"] == CELLS and res["slurm_jobs"] == CELLS + 1, res
    assert res["slurm_job_states"] == {"COMPLETED": CELLS + 1}, res
    assert res["sbatch_calls"] == 2, res  # the cells' array, then merge
    st = res["status_calls"]
    assert st["scontrol (status)"] == 0 and 0 < st["squeue"] <= st["sacct"], res  # accounting on
    assert res["executor_report"] and f"{CELLS + 1} job(s) in 2 sbatch call(s)" in res["executor_report"], res
    assert res["snakemake_peak_rss_mib"] > 0 and res["executor_cpu_ms_per_job"] > 0, res
    assert (tmp_path / f"scale-{CELLS}.json").is_file()
    print(f"\nscale, {CELLS} cells: {res['sbatch_calls']} sbatch, status {st}, wall {res['wall_s']:.0f} s, "
          f"executor {res['executor_cpu_ms_per_job']:.0f} ms CPU/job, Snakemake peak {res['snakemake_peak_rss_mib']:.0f} MiB")
