"""Wall time and peak memory of `prunegen merge` over a synthetic study of about 10,000 cells.

The grid is the digits benchmark with every arm, 10 levels, 4 noise levels and 49 seeds
(4 x 49 x 51 = 9,996 cells). Every cell gets the records `prunegen.engine.run` writes, with
made-up but realistic values: `summary.parquet` (computed from the examples by
`prunegen.engine.run.summarize`), `history.parquet` (16 epochs per cycle; a chain cell repeats its
parent's rows, as prunegen.engine.run does), `examples.parquet` (1,797 rows: digits' train / val /
test splits with the seed's real noisy labels), empty `model.pt` / `mask.pt`, and
`cell.json` with the cell's hash and its files' sizes and checksums, last. Generating the grid takes minutes (a process
pool); it is kept in `benchmarks/out/merge-grid/` and reused while its parameters match.

Each repeat runs the merge as a fresh process, both as `prunegen merge` (what the workflow
runs) and as `prunegen.analysis.merge` in a bare interpreter, reads
its wall time, CPU time and peak RSS (`wait4`), then checks the row counts of the
summary, history and subgroups tables. On a loaded machine the CPU time is the steadier
figure.

The cost of record verification (each cell.json's self-checksum, a stat of every record
file, the sha256 of every file the merge reads) is the ratio of each merge to the same
merge with verification switched off in that process (`--verify on,off`, interleaved).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "benchmarks/out/merge-grid"
EPOCHS = 16
BENCHMARK = {"dataset": "digits", "model": {"name": "mlp", "hidden": [300, 100]}, "data": {"val_size": 180},
             "train": {"epochs": EPOCHS, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0,
                       "schedule": {"kind": "step", "milestones": [0.5, 0.75], "gamma": 0.1}},
             "prune": {"fraction": 0.2}}
ARMS = ["dense", "imp", "extended", "downscaled", "downscaled_extended", "random"]


def study_dict(levels: int, noise: list[float], seeds: int) -> dict:
    return {"study": "merge", "data_root": str(REPO / "data"), "results_root": str(GRID / "results"),
            "device": "cpu", "benchmarks": {"digits-mlp": BENCHMARK}, "arms": ARMS, "levels": levels,
            "noise": noise, "noise_mode": "other_class", "seeds": list(range(seeds))}


# ---------------------------------------------------------------- generation (worker side)

def _history_cycle(rng, cycle: int, level: int) -> list[dict]:
    import numpy as np

    rows, loss = [], 1.2 * (0.8 ** level) + 0.3
    for epoch in range(EPOCHS):
        lr = 0.05 * 0.1 ** sum(epoch / EPOCHS >= m for m in (0.5, 0.75))
        loss *= float(rng.uniform(0.5, 0.9))
        acc = float(np.clip(1 - loss + rng.normal(0, 0.01), 0, 1))
        rows.append({"cycle": cycle, "epoch": epoch + 1, "lr": lr, "train_loss": loss, "train_acc": acc,
                     "val_loss": loss + 0.1, "val_acc": acc - 0.02, "test_loss": loss + 0.12,
                     "test_acc": acc - 0.03, "seconds": float(rng.uniform(0.015, 0.03))})
    return rows


def _examples(rng, splits, arm: str, level: int) -> dict:
    """Per-example records shaped like prunegen.engine.run.examples_table: fitted training examples
    (noisy ones less so as the model shrinks), ~95% test accuracy."""
    import numpy as np

    cols: dict[str, list] = {}
    fit_noisy = 0.95 * 0.75 ** level if arm != "extended" else 0.95
    for split in (splits.train, splits.val, splits.test):
        y, true_y = split.y.numpy(), split.true_y.numpy()
        noisy = y != true_y
        p_fit = np.where(noisy, fit_noisy, 0.99) if split.name == "train" else np.full(len(y), 0.95)
        fit = rng.random(len(y)) < p_fit
        target = y if split.name == "train" else true_y
        other = (target + rng.integers(1, 10, len(y))) % 10
        pred = np.where(fit, target, other)
        loss = np.where(pred == y, rng.exponential(0.05, len(y)), 0.7 + rng.exponential(2.0, len(y)))
        part = {"split": np.full(len(y), split.name, dtype=object), "index": split.index.numpy(),
                "observed_label": y, "true_label": true_y, "is_noisy": noisy, "loss": loss.astype(np.float32),
                "predicted": pred, "correct_observed": pred == y, "correct_true": pred == true_y}
        for k, v in part.items():
            cols.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in cols.items()}


_WIDTHS: dict[int, tuple[int, float]] = {}


def generate_group(study_path: str, noise: float, seed: int) -> tuple[int, int]:
    """Every cell of one (noise, seed): returns (cells, history rows the merge keeps)."""
    import types

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from prunegen.engine.data import load_dataset
    from prunegen.engine.run import summarize
    from prunegen.engine.splits import make_splits
    from prunegen.engine.start import downscaled_width
    from prunegen.records import layout, schemas, store
    from prunegen.study.arm_specs import CHAIN_ARMS
    from prunegen.study.load import load_study

    study = load_study(study_path)
    bm = study.benchmarks["digits-mlp"]
    dataset = load_dataset("digits", study.data_root)
    splits = make_splits(dataset, val_size=bm.data.val_size, noise=noise, noise_mode=study.noise_mode, seed=seed,
                         augment=False, device="cpu")
    rng = np.random.default_rng([seed, int(noise * 1000)])
    prunable, parameters = 64 * 300 + 300 * 100, 64 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    chains: dict[str, list[dict]] = {}
    cells = kept_rows = 0
    for arm in ARMS:
        for level in ([0] if arm == "dense" else range(1, study.levels + 1)):
            cell = study.cell("digits-mlp", arm, level, noise, seed)
            if arm == "dense":
                own = [0]
            elif arm in CHAIN_ARMS or arm == "downscaled_extended":
                own = [level] if arm in CHAIN_ARMS else list(range(level + 1))
            else:
                own = [0]
            history = [r for c in own for r in _history_cycle(rng, c, level)]
            if arm in CHAIN_ARMS:  # the parent's whole curve first, as cell.run does
                parent = chains["dense"] if level == 1 else chains[arm]
                history = parent + history
            chains[arm if level else "dense"] = history
            kept_rows += len(own) * EPOCHS
            if arm.startswith("downscaled"):
                if level not in _WIDTHS:  # the same for every noise and seed: searched once per worker
                    _WIDTHS[level] = downscaled_width(cell, dataset.input_shape, dataset.num_classes)
                width, ratio = _WIDTHS[level]
                density, h2 = 1.0, max(1, round(100 * width / 300))  # models.build_model's widths
                n_prunable, n_params = 64 * width + width * h2, 65 * width + (width + 11) * h2 + 10
            else:
                width, ratio, density = 300, 1.0, (1 - bm.prune.fraction) ** level
                n_prunable, n_params = prunable, parameters
            nonzero = round(n_prunable * density)
            report = {"density": nonzero / n_prunable, "sparsity": 1 - nonzero / n_prunable,
                      "sparsity_all": (n_prunable - nonzero) / n_params, "prunable_weights": n_prunable,
                      "prunable_nonzero": nonzero, "parameters": n_params,
                      "parameters_kept": n_params - (n_prunable - nonzero)}
            total_cycles = level + 1 if arm in (*CHAIN_ARMS, "downscaled_extended") else 1
            start = types.SimpleNamespace(width=width, width_ratio=ratio, total_cycles=total_cycles, total_epochs=None)
            ex = _examples(rng, splits, arm, level)
            summary = summarize(cell, ex, report, start)
            summary["wall_seconds"] = float(rng.uniform(2, 6))

            out = cell.dir
            out.mkdir(parents=True, exist_ok=True)
            (out / layout.COMPLETE_MARKER).unlink(missing_ok=True)
            for name in ("model.pt", "mask.pt"):  # not read by the merge: placeholders
                (out / name).touch()
            store.write_parquet(history, schemas.HISTORY, out / "history.parquet")
            with store.atomic_write(out / "examples.parquet") as tmp:  # = write_parquet(ex, EXAMPLES)
                pq.write_table(pa.Table.from_pydict(ex, schema=schemas.EXAMPLES), tmp)
            store.write_parquet([summary], schemas.SUMMARY, out / "summary.parquet")
            store.write_cell_json({"cell_hash": cell.hash, "key": cell.key, "hparams": cell.hparams(),
                                "study": study.name, "width": width, "width_ratio": ratio,
                                "cycles_trained": own, "layer_density": {}, "resumed_from": None,
                                "device": "cpu", "device_name": "synthetic", "versions": {},
                                "git_revision": None, "wall_seconds": summary["wall_seconds"]},
                                    out)
            cells += 1
    return cells, kept_rows


# ---------------------------------------------------------------- generation (driver)

def generate(params: dict, workers: int) -> dict:
    """The grid on disk (reused when `generated.json` records the same parameters)."""
    import yaml

    stamp = GRID / "generated.json"
    if stamp.exists():
        done = json.loads(stamp.read_text())
        if done["params"] == params:
            print(f"reusing the grid in {GRID} ({done['cells']} cells)")
            return done
    shutil.rmtree(GRID, ignore_errors=True)
    GRID.mkdir(parents=True)
    study_path = GRID / "study.yaml"
    study_path.write_text(yaml.safe_dump(study_dict(params["levels"], params["noise"], params["seeds"])))
    groups = [(str(study_path), n, s) for n in params["noise"] for s in range(params["seeds"])]
    t0 = time.perf_counter()
    cells = rows = 0
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for i, (c, r) in enumerate(pool.map(generate_group, *zip(*groups)), 1):
            cells, rows = cells + c, rows + r
            if i % 20 == 0 or i == len(groups):
                print(f"  generated {i}/{len(groups)} groups, {cells} cells, {time.perf_counter() - t0:.0f} s",
                      flush=True)
    size = sum(f.stat().st_size for f in (GRID / "results").rglob("*") if f.is_file())
    done = {"params": params, "cells": cells, "history_rows": rows, "bytes": size,
            "generate_s": time.perf_counter() - t0, "study": str(study_path)}
    stamp.write_text(json.dumps(done, indent=2) + "\n")
    return done


# ---------------------------------------------------------------- measurement

LIBRARY = ("import logging, sys; logging.basicConfig(level=logging.INFO); from prunegen.analysis.merge import merge; "
           "from prunegen.study.load import load_study; merge(load_study(sys.argv[1]))")
CLI = "import sys; from prunegen import cli; sys.exit(cli.main(['merge', '--study', sys.argv[1]]))"
# Verification off: no size/mtime/checksum comparison of any record file, no self-checksum
# of cell.json (what the merge did before records were checksummed).
NO_VERIFY = ("from prunegen.records import store; store.mismatch = lambda path, expected, data=None: None; "
             "store._self_checksum_ok = lambda meta: True; ")


def merge_once(study: str, how: str, verify: bool = True) -> dict:
    """A merge in a fresh process: wall time, its own peak RSS, its phase log. `how`:
    `cli` = `prunegen merge` (what the workflow runs), `library` = `prunegen.analysis.merge` alone;
    `verify=False`: with record verification switched off."""
    if verify:
        cmd = ["-m", "prunegen.cli", "merge", "--study", study] if how == "cli" else ["-c", LIBRARY, study]
    else:
        cmd = ["-c", NO_VERIFY + (CLI if how == "cli" else LIBRARY), study]
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         cwd=REPO)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        sys.exit(f"prunegen merge failed ({p.returncode}):\n{out}")
    m = re.search(r"merged (\d+) of (\d+) cells .* in [\d.]+s \((.*)\)", out)
    phases = {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+)s", m.group(3))} if m else {}
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime,
            "phases_s": phases, "load_avg_1min": os.getloadavg()[0]}


def verification_work(study_path: str) -> dict:
    """The verification a merge does, timed alone in this process (steadier than the
    difference of two noisy merges): the scan with and without it, plus a sha256 of every
    Parquet file the merge reads (already in memory there; read first here)."""
    import hashlib

    from prunegen.analysis.scan import scan
    from prunegen.records import store
    from prunegen.study.load import load_study

    study = load_study(study_path)
    read = tuple(f"{k}.parquet" for k in ("summary", "history", "examples"))
    scan(study, read_later=read)  # warm the page cache
    t0 = time.process_time()
    scan(study, read_later=read)
    scan_on = time.process_time() - t0
    saved = store.mismatch, store._self_checksum_ok
    store.mismatch, store._self_checksum_ok = (lambda path, expected, data=None: None), (lambda meta: True)
    try:
        t0 = time.process_time()
        scan(study, read_later=read)
        scan_off = time.process_time() - t0
    finally:
        store.mismatch, store._self_checksum_ok = saved
    blobs = [p.read_bytes() for c in study.cells() for p in (c.dir / n for n in read)]
    t0 = time.process_time()
    for data in blobs:
        hashlib.sha256(data).hexdigest()
    hashing = time.process_time() - t0
    return {"scan_cpu_s": scan_on, "scan_noverify_cpu_s": scan_off, "sha256_cpu_s": hashing,
            "bytes_hashed": sum(map(len, blobs)), "cpu_s": scan_on - scan_off + hashing}


def check(grid: dict) -> dict:
    import pyarrow.parquet as pq

    tables = GRID / "results/merge/tables"
    rows = {name: pq.ParquetFile(tables / f"{name}.parquet").metadata.num_rows
            for name in ("summary", "history", "subgroups", "headline")}
    params = grid["params"]
    groups = len(params["noise"]) * params["seeds"]
    clean = sum(n == 0 for n in params["noise"]) * params["seeds"]
    assert rows["summary"] == grid["cells"], (rows, grid)
    assert rows["history"] == grid["history_rows"], (rows, grid)
    # every cell: all, clean, 5 loss bins, and noisy where the noise is > 0
    assert rows["subgroups"] == 8 * grid["cells"] - clean * grid["cells"] // groups, (rows, grid)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=49, help="seeds (grid = 4 noise levels x seeds x 51 cells)")
    ap.add_argument("--levels", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="processes generating the grid")
    ap.add_argument("--how", default="cli,library", help="cli: `prunegen merge`; library: analysis.merge "
                    "in a bare interpreter (default: %(default)s)")
    ap.add_argument("--verify", default="on,off", help="on: records verified (as shipped); off: verification "
                    "switched off, for the ratio on/off (default: %(default)s)")
    args = ap.parse_args()
    params = {"levels": args.levels, "noise": [0.0, 0.05, 0.1, 0.2], "seeds": args.seeds, "version": 1}
    grid = generate(params, args.workers)
    result = {"cells": grid["cells"], "grid_bytes": grid["bytes"], "repeats": args.repeats,
              "target": {"wall_s": 30, "peak_rss_mb": 2048}, "cpus": os.cpu_count()}
    modes = [(how, v == "on") for how in args.how.split(",") for v in args.verify.split(",")]
    hows = [how if verify else f"{how}-noverify" for how, verify in modes]
    runs: dict[str, list[dict]] = {how: [] for how in hows}
    for i in range(args.repeats):
        for how, (base, verify) in zip(hows, modes):  # interleaved: all see the same background load
            r = merge_once(grid["study"], base, verify)
            runs[how].append(r)
            result["table_rows"] = check(grid)
            print(f"  {how:16s} merge {i + 1}/{args.repeats}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB, load {r['load_avg_1min']:.1f} "
                  f"({', '.join(f'{k} {v:.1f}s' for k, v in r['phases_s'].items())})", flush=True)
    for how in hows:
        wall, cpu, rss = ([r[k] for r in runs[how]] for k in ("wall_s", "cpu_s", "peak_rss_mb"))
        result[how] = {"wall_s_median": statistics.median(wall), "wall_s_min": min(wall), "wall_s_max": max(wall),
                       "cpu_s_median": statistics.median(cpu), "peak_rss_mb_median": statistics.median(rss),
                       "peak_rss_mb_max": max(rss), "runs": runs[how]}
        print(f"{how:7s} merge of {grid['cells']} cells ({grid['bytes'] / 2**20:.0f} MiB of records): wall median "
              f"{statistics.median(wall):.1f} s (min {min(wall):.1f}, max {max(wall):.1f}), CPU median "
              f"{statistics.median(cpu):.1f} s, peak RSS median {statistics.median(rss):.0f} MB (max {max(rss):.0f}), "
              f"{args.repeats} runs; target < 30 s, < 2048 MB")
    for how in hows:
        if f"{how}-noverify" in runs:  # verification's cost: paired per repeat, median of the ratios
            on, off = runs[how], runs[f"{how}-noverify"]
            ratio = {k: statistics.median(a[k] / b[k] for a, b in zip(on, off)) for k in ("wall_s", "cpu_s")}
            of_medians = {k: statistics.median(a[k] for a in on) / statistics.median(b[k] for b in off)
                          for k in ("wall_s", "cpu_s")}
            result[f"{how}_verify_ratio"] = {"paired_median": ratio, "of_medians": of_medians}
            print(f"{how:7s} merge with / without record verification: wall x{ratio['wall_s']:.3f}, "
                  f"CPU x{ratio['cpu_s']:.3f} (median of {len(on)} paired ratios); ratio of medians: wall "
                  f"x{of_medians['wall_s']:.3f}, CPU x{of_medians['cpu_s']:.3f}; target < x1.10")
    work = result["verification_work"] = verification_work(grid["study"])
    for how in hows:
        if f"{how}-noverify" in runs:
            base = statistics.median(r["cpu_s"] for r in runs[f"{how}-noverify"])
            work[f"{how}_fraction_of_cpu"] = work["cpu_s"] / base
            print(f"{how:7s} verification work timed alone: {work['cpu_s']:.2f} s CPU (scan {work['scan_cpu_s']:.2f} s "
                  f"vs {work['scan_noverify_cpu_s']:.2f} s without, sha256 of {work['bytes_hashed'] / 2**20:.0f} MiB "
                  f"{work['sha256_cpu_s']:.2f} s) = {work['cpu_s'] / base:.1%} of the merge's CPU without it")
    out = REPO / "benchmarks/out"
    out.mkdir(exist_ok=True)
    (out / "merge.json").write_text(json.dumps(result, indent=2) + "\n")

if __name__ == "__main__":
    main()
