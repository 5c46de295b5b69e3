"""The files a run leaves (issue 30 item 4): a study of N one-epoch digits cells (default
1,000) through `snakemake --profile profiles/slurm` on the test cluster, run twice, each in
a fresh folder: keeping every file (`--prunegen-keep-files-days 30`: what every run left
before the clean-up existed) and with the profile's default (0: what succeeded is removed
as the run ends). Files are counted under `.snakemake/` and `results/`, by kind.

    bash tests/slurm/start.sh
    .venv/bin/python benchmarks/files.py                       # 1,000 cells, 8 worker jobs
    .venv/bin/python benchmarks/files.py --cells 100 --workers 0   # one SLURM job per cell

Output: printed, and benchmarks/out/files-<N>-w<workers>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import scale  # noqa: E402  (its study: N one-epoch digits cells)


def kind(rel: Path) -> str:
    """A file's kind, by where it is."""
    parts = rel.parts
    if parts[0] == ".snakemake":
        if len(parts) > 2 and parts[1] == "submitit":
            if "queue" in parts:
                return "submitit: worker queues"
            name = parts[-1]
            for end in ("_submitted.pkl", "_result.pkl", "_log.out", "_log.err", "_submission.sh"):
                if name.endswith(end):
                    return f"submitit: *{end}"
            return f"submitit: {name}" if "." in name else "submitit: other"
        return f".snakemake/{parts[1]}"
    if "cells" in parts and "logs" in parts:
        return "results: cell logs" if rel.suffix == ".log" else "results: cell logs packed (.tar.gz)"
    if "cells" in parts and "benchmarks" in parts:
        return "results: cell benchmark .tsv"
    if "cells" in parts:
        return "results: cell records (parquet, pt, json)"
    return f"results: {parts[2] if len(parts) > 2 else parts[-1]}"


def count(workdir: Path) -> dict:
    files = [p for p in workdir.rglob("*") if p.is_file() and p.name != "study.yaml"]
    by = Counter(kind(p.relative_to(workdir)) for p in files)
    return {"total": len(files), "under .snakemake": sum(v for k, v in by.items() if not k.startswith("results")),
            "under results": sum(v for k, v in by.items() if k.startswith("results")), "by kind": dict(sorted(by.items()))}


def run(n: int, workers: int, keep_days: float, folder: Path) -> dict:
    folder.mkdir(parents=True)
    study = folder / "study.yaml"
    study.write_text(yaml.safe_dump(scale.study(n)))
    cmd = [sys.executable, "-m", "snakemake", "--profile", str(REPO / "profiles/slurm"),
           "--snakefile", str(REPO / "Snakefile"), "-d", str(folder), "--seconds-between-status-checks", "2",
           "--prunegen-workers", str(workers), "--prunegen-keep-files-days", str(keep_days),
           "merge", "--config", f"study={study}", f"results_root={folder / 'results'}"]
    t0 = time.monotonic()
    with open(folder.parent / f"{folder.name}.log", "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    if rc != 0:
        raise SystemExit(f"the run failed (exit {rc}): see {folder.parent / (folder.name + '.log')}")
    time.sleep(5)  # worker jobs told to stop end within seconds: count what they leave too
    return {"keep_files_days": keep_days, "wall_s": round(time.monotonic() - t0, 1), **count(folder)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=8, help="the profile's prunegen-workers (0: a job per cell)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="prunegen-files-") as tmp:
        before = run(args.cells, args.workers, 30, Path(tmp) / "kept")
        after = run(args.cells, args.workers, 0, Path(tmp) / "cleaned")
    out = {"cells": args.cells, "workers": args.workers, "before (every file kept)": before,
           "after (default: what succeeded removed)": after}
    path = REPO / "benchmarks/out" / f"files-{args.cells}-w{args.workers}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
