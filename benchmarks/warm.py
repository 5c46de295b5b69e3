"""Warm processes against one process per cell (issue 27, item 1): the same study run both
ways by `snakemake --cores N`, side by side in this script, each from empty results.

    .venv/bin/python benchmarks/warm.py                       # the demo study (186 cells), 2 cores
    .venv/bin/python benchmarks/warm.py --study workflow/studies/smoke.yaml

Reported (printed, and as JSON in benchmarks/out/warm-<study>.json): the wall time of each
run (Snakemake's whole run: DAG, cells, merge, figures), their ratio (warm over one
process per cell; the target is at most 1/3 for the demo), the processes that ran cells
(from the cells' warm.json), and whether the merged tables are identical (every column but
wall-clock ones). The per-process run goes first; the order is fixed so that a warm page
cache favours the second run at most by what reading the dataset files costs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
TABLES = ("summary", "history", "headline", "optimal", "memorization")
WALL = ("wall_seconds", "seconds")


def run(study: Path, work: Path, cores: int, warm: bool) -> float:
    work.mkdir(parents=True)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-d", str(work),
           "--cores", str(cores), "--config", f"study={study}", f"results_root={work}/results",
           f"warm={'true' if warm else 'false'}"]
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"{'warm' if warm else 'per-process'} run failed:\n{p.stderr[-4000:]}")
    return wall


def identical(a: Path, b: Path) -> dict[str, bool]:
    out = {}
    for t in TABLES:
        x, y = (pd.read_parquet(r / "tables" / f"{t}.parquet") for r in (a, b))
        drop = [c for c in x.columns if c in WALL or c.startswith("wall_seconds")]
        out[t] = x.drop(columns=drop).equals(y.drop(columns=drop))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", type=Path, default=REPO / "workflow/studies/demo.yaml")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    a = ap.parse_args(argv)
    study = a.study.absolute()
    name = __import__("yaml").safe_load(study.read_text())["study"]
    work = Path(tempfile.mkdtemp(prefix="prunegen-warm-"))
    try:
        cold = run(study, work / "per-process", a.cores, warm=False)
        warm = run(study, work / "warm", a.cores, warm=True)
        roots = [work / w / "results" / name for w in ("per-process", "warm")]
        same = identical(*roots)
        costs = [json.loads(p.read_text()) for p in (roots[1] / "benchmarks").rglob("*.warm.json")]
        cells = sum(1 for _ in (roots[1] / "cells").rglob("cell.json"))
        res = {"study": name, "cells": cells, "cores": a.cores, "per_process_wall_s": cold, "warm_wall_s": warm,
               "ratio": warm / cold, "warm_processes": len({c["pid"] for c in costs}),
               "cells_in_warm_processes": len(costs), "tables_identical": same}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"warm-{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"warm, {name} ({cells} cells, --cores {a.cores}): one process per cell {cold:.0f} s, warm {warm:.0f} s "
          f"(x{warm / cold:.2f}; {res['warm_processes']} processes ran {len(costs)} cells); tables identical: "
          f"{all(same.values())}")
    return res


if __name__ == "__main__":
    main()
