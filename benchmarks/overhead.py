"""Fixed cost of one cell job vs its training time.

Runs `prunegen run-cell` as a fresh process (as Snakemake does) several times and
splits its wall time into training (the sum of the per-epoch `seconds` in the cell's
history) and everything else (interpreter, imports, data, model, records).

Each cell run is paired with a run of `python -c "import torch"`, the floor no cell job
can go below, so the figure above it is readable on a machine whose speed (and page
cache) varies from hour to hour.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "digits": {"dataset": "digits", "model": {"name": "mlp", "hidden": [300, 100]},
               "train": {"epochs": 16, "batch_size": 64, "lr": 0.05}},
    "mnist": {"dataset": "mnist", "model": {"name": "mlp", "hidden": [300, 100]},
              "train": {"epochs": 1, "batch_size": 128, "lr": 0.1, "momentum": 0.0,
                        "schedule": {"kind": "constant"}}},
}


ENV = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}  # one thread, as a cell job with cpus: 1


def one(case: str, spec: dict, root: Path) -> dict:
    study = {"study": "overhead", "data_root": str(REPO / "data"), "results_root": str(root), "device": "cpu",
             "benchmarks": {case: spec}, "arms": ["dense"], "levels": 0, "noise": [0.0], "seeds": [0]}
    path = root / f"{case}.yaml"
    path.write_text(yaml.safe_dump(study))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "prunegen.cli", "run-cell", "--study", str(path), "--benchmark", case,
                    "--arm", "dense", "--level", "0", "--noise", "0.0", "--seed", "0"],
                   check=True, capture_output=True, env=ENV)
    wall = time.perf_counter() - t0
    cell = root / "overhead/cells" / f"benchmark={case}/arm=dense/noise=0.0/seed=0/level=0"
    training = float(pq.read_table(cell / "history.parquet").column("seconds").to_numpy().sum())
    return {"wall_s": wall, "training_s": training, "fixed_s": wall - training}


def torch_floor() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True, env=ENV)
    return time.perf_counter() - t0


def main(repeats: int = 5) -> None:
    results = {}
    for case, spec in CASES.items():
        if case == "mnist" and not (REPO / "data/MNIST/raw").exists():
            continue
        runs = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                runs.append({**one(case, spec, Path(tmp)), "import_torch_s": torch_floor()})
        fixed = [r["fixed_s"] for r in runs]
        above = [r["fixed_s"] - r["import_torch_s"] for r in runs]
        results[case] = {"repeats": repeats, "fixed_s_median": statistics.median(fixed),
                         "fixed_s_min": min(fixed), "fixed_s_max": max(fixed),
                         "training_s_median": statistics.median(r["training_s"] for r in runs),
                         "import_torch_s_median": statistics.median(r["import_torch_s"] for r in runs),
                         "fixed_above_import_torch_s_median": statistics.median(above),
                         "runs": runs}
        r = results[case]
        print(f"{case:7s} fixed cost median {r['fixed_s_median']:.2f} s (min {r['fixed_s_min']:.2f}, "
              f"max {r['fixed_s_max']:.2f}) vs training {r['training_s_median']:.2f} s; `import torch` alone "
              f"{r['import_torch_s_median']:.2f} s, fixed cost above it {r['fixed_above_import_torch_s_median']:.2f} s; "
              f"{repeats} runs")
    out = REPO / "benchmarks/out"
    out.mkdir(exist_ok=True)
    (out / "overhead.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
