"""`snakemake -n` wall time and peak memory: the paper grid, and a synthetic grid of about
20,000 cells (20,020: the paper's benchmarks with more noise levels and seeds)."""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def dry_run(study: Path) -> dict:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"),
                          "--directory", str(study.parent), "--config", f"study={study}"],
                         capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    # job stats: one line per benchmark's cell rule (the table is printed more than once)
    cells = sum(int(n) for n in dict(re.findall(r"^(cell\w*)\s+(\d+)$", out.stdout + out.stderr, re.M)).values())
    return {"cells": cells, "wall_s": wall, "peak_rss_mb_so_far": peak_mb}


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        paper = yaml.safe_load((REPO / "workflow/studies/paper.yaml").read_text())
        path = Path(tmp) / "paper.yaml"
        path.write_text(yaml.safe_dump(paper))
        results["paper"] = dry_run(path)
        big = dict(paper, noise=[i / 64 for i in range(11)], seeds=list(range(5)))  # 4 x 11 x 5 x 91 = 20,020
        path = Path(tmp) / "big.yaml"
        path.write_text(yaml.safe_dump(big))
        results["synthetic"] = dry_run(path)
    for name, r in results.items():
        print(f"{name:9s} {r['cells']:6d} cells: dry run {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mb_so_far']:.0f} MB")
    out = REPO / "benchmarks/out"
    out.mkdir(exist_ok=True)
    (out / "dag.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
