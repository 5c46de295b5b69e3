"""`snakemake -n` wall time and peak memory: the paper grid, a synthetic grid of about
20,000 cells (20,020: the paper's benchmarks with more noise levels and seeds), and, when
benchmarks/merge.py has generated it, its grid of 9,996 complete cells with records.

Each dry run is paired with the same dry run with record verification switched off (the
Snakefile's corrupt-cell check: per cell a cell.json read and self-checksum, a stat of
each record file), alternated; the ratio is verification's cost at DAG build. Only the
complete grid has records to check: on the other two the check finds no cell.json."""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MERGE_GRID = REPO / "benchmarks/out/merge-grid"
# The dry run in this process, with the corrupt-cell check switched off
NO_VERIFY = ("import sys; from prunegen.cluster import dag; dag.corrupt_cells = lambda *a, **k: {}; "
             "from snakemake.cli import main; sys.exit(main(sys.argv[1:]))")


def dry_run(study: Path, verify: bool = True) -> dict:
    args = ["-n", "--snakefile", str(REPO / "Snakefile"), "--directory", str(study.parent),
            "--config", f"study={study}"]
    cmd = [sys.executable, "-m", "snakemake", *args] if verify else [sys.executable, "-c", NO_VERIFY, *args]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"snakemake -n failed:\n{out[-3000:]}")
    # job stats: one line per benchmark's cell rule (the table is printed more than once)
    cells = sum(int(n) for n in dict(re.findall(r"^(cell\w*)\s+(\d+)$", out, re.M)).values())
    return {"cells_to_run": cells, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024}


def compare(study: Path, repeats: int) -> dict:
    """Dry runs with and without verification, alternated; medians and paired ratios."""
    on, off = [], []
    for _ in range(repeats):
        on.append(dry_run(study, True))
        off.append(dry_run(study, False))
    med = lambda runs, k: statistics.median(r[k] for r in runs)  # noqa: E731
    ratio = {k: statistics.median(a[k] / b[k] for a, b in zip(on, off)) for k in ("wall_s", "cpu_s")}
    return {"cells_to_run": on[0]["cells_to_run"], "wall_s": med(on, "wall_s"), "cpu_s": med(on, "cpu_s"),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in on), "wall_s_noverify": med(off, "wall_s"),
            "cpu_s_noverify": med(off, "cpu_s"), "verify_ratio": ratio, "runs": {"on": on, "off": off}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--grids", default="paper,synthetic,complete", help="(default: %(default)s)")
    args = ap.parse_args()
    grids = args.grids.split(",")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        paper = yaml.safe_load((REPO / "workflow/studies/paper.yaml").read_text())
        studies = {}
        if "paper" in grids:
            studies["paper"] = Path(tmp) / "paper.yaml"
            studies["paper"].write_text(yaml.safe_dump(paper))
        if "synthetic" in grids:
            big = dict(paper, noise=[i / 64 for i in range(11)], seeds=list(range(5)))  # 4 x 11 x 5 x 91 = 20,020
            studies["synthetic"] = Path(tmp) / "big.yaml"
            studies["synthetic"].write_text(yaml.safe_dump(big))
        if "complete" in grids and (MERGE_GRID / "generated.json").exists():
            studies["complete"] = Path(json.loads((MERGE_GRID / "generated.json").read_text())["study"])
        for name, study in studies.items():
            r = results[name] = compare(study, args.repeats)
            print(f"{name:9s} dry run ({r['cells_to_run']} cells to run): {r['wall_s']:.1f} s wall, "
                  f"{r['cpu_s']:.1f} s CPU, peak RSS {r['peak_rss_mb']:.0f} MB; without verification "
                  f"{r['wall_s_noverify']:.1f} s wall, {r['cpu_s_noverify']:.1f} s CPU: with / without "
                  f"wall x{r['verify_ratio']['wall_s']:.3f}, CPU x{r['verify_ratio']['cpu_s']:.3f} "
                  f"(median of {args.repeats} paired runs; target < x1.10)", flush=True)
    out = REPO / "benchmarks/out"
    out.mkdir(exist_ok=True)
    (out / "dag.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
