"""What each cell job cost: the `compute` table, its summary for the Snakemake report, and
the one-row summary a results page prints (cells, epochs, time, machines, engines).

Per complete cell: Snakemake's benchmark file of its job (or, for a cell that a warm
process ran, that process's own figures: `<cell>.warm.json`, column `process`)
(`results/<study>/benchmarks/cells/<cell>.tsv`: wall seconds, CPU seconds, max RSS,
...), and where the job ran on a GPU, what the NVML sampler saw
(`<cell>.gpu.json` beside the TSV: device memory used at most, mean utilization, and
torch's own peak). A cell run without Snakemake (`prunegen run-cell` by hand) has no
TSV: its job columns are empty, the row is still there. Without NVML (the sampler is
prunegen.engine.gpu_sampler), or without a GPU, the GPU columns are empty.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..records import layout, provenance, store
from ..records.schemas import KEY_COLUMNS as KEYS
from ..study import chains
from ..study.arm_specs import arm_rank
from ..study.grid import Study

log = logging.getLogger("prunegen")

# Snakemake's benchmark TSV column -> table column (MB columns stay MB, as Snakemake writes them)
TSV_COLUMNS = {"s": "job_seconds", "cpu_time": "cpu_seconds", "max_rss": "max_rss_mb", "max_vms": "max_vms_mb",
               "max_uss": "max_uss_mb", "max_pss": "max_pss_mb", "io_in": "io_in_mb", "io_out": "io_out_mb",
               "mean_load": "mean_load"}
GPU_COLUMNS = ("gpu_name", "gpu_mem_used_max_mb", "gpu_util_mean", "gpu_util_max", "gpu_torch_peak_mb",
               "gpu_samples")


def read_tsv(path: Path) -> dict:
    """The last row of a Snakemake benchmark file ("NA" -> NaN); {} when there is none.
    A file that is there but unreadable is an error naming it."""
    if not path.is_file():
        return {}
    try:
        df = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
        row = df.iloc[-1]
        return {col: float(row[src]) if src in df.columns else math.nan for src, col in TSV_COLUMNS.items()}
    except (pd.errors.ParserError, pd.errors.EmptyDataError, IndexError, ValueError) as e:
        raise ValueError(f"{path}: not a Snakemake benchmark file ({type(e).__name__}: {e})") from None


WARM_COLUMNS = ("job_seconds", "cpu_seconds", "max_rss_mb")


def read_warm(path: Path) -> dict:
    """A cell run by a warm process (prunegen.cluster.worker): its own seconds and CPU
    seconds, and the most memory its process had held by its end, instead of the job's
    (whose benchmark file then measured only the job that waited for it)."""
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {**{c: float(raw[c]) for c in WARM_COLUMNS}, "process": "warm"}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a warm process's cost file ({type(e).__name__}: {e})") from None


def read_gpu(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {c: raw.get(c) for c in GPU_COLUMNS}
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a GPU sample file ({e})") from None


def table(study: Study, done: pd.DataFrame) -> pd.DataFrame:
    """One row per complete cell (rows of `done`: keys), with its job's figures."""
    rows = []
    for key in done[KEYS].to_dict("records"):
        cell = study.cell(key["benchmark"], key["arm"], int(key["level"]), float(key["noise"]), int(key["seed"]))
        tsv = read_tsv(layout.benchmark_tsv(study.root, cell.relpath))
        rows.append({**key, **{c: math.nan for c in TSV_COLUMNS.values()}, **tsv,
                     "process": "own" if tsv else None, **read_warm(layout.warm_json(study.root, cell.relpath)),
                     **{c: None for c in GPU_COLUMNS}, **read_gpu(layout.gpu_json(study.root, cell.relpath))})
    df = pd.DataFrame(rows, columns=[*KEYS, *TSV_COLUMNS.values(), "process", *GPU_COLUMNS])
    floats = [c for c in (*TSV_COLUMNS.values(), *GPU_COLUMNS) if c not in ("gpu_name", "gpu_samples")]
    df = df.astype({"noise": float, "seed": "int64", "level": "int64", **{c: float for c in floats},
                    "gpu_samples": "Int64", "gpu_name": "string", "process": "string"})
    return df.sort_values(KEYS, ignore_index=True)


def summary(compute: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark and arm: jobs with a benchmark file, hours of wall and CPU time,
    the longest job, the largest RSS, and on GPU the most memory and the mean utilization."""
    g = compute.groupby(["benchmark", "arm"], sort=False)
    out = pd.DataFrame({
        "cells": g.size(), "jobs_measured": g["job_seconds"].count(),
        "wall_hours": g["job_seconds"].sum() / 3600, "cpu_hours": g["cpu_seconds"].sum() / 3600,
        "longest_job_min": g["job_seconds"].max() / 60, "max_rss_mb": g["max_rss_mb"].max(),
        "gpu_mem_used_max_mb": g["gpu_mem_used_max_mb"].max(), "gpu_util_mean": g["gpu_util_mean"].mean(),
    }).reset_index()
    rank = out["arm"].map(arm_rank)
    return out.assign(_r=rank).sort_values(["benchmark", "_r"]).drop(columns="_r").reset_index(drop=True)


def write_html(summ: pd.DataFrame, path: Path, study: Study) -> Path:
    """The summary as the HTML page the Snakemake report shows inline (atomically)."""
    total = {"cells": int(summ["cells"].sum()), "jobs": int(summ["jobs_measured"].sum()),
             "wall": float(summ["wall_hours"].sum()), "cpu": float(summ["cpu_hours"].sum())}
    body = summ.to_html(index=False, na_rep="", float_format=lambda x: f"{x:,.3f}", border=0)
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>compute: {study.name}</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
            "td,th{padding:2px 8px;text-align:right}</style></head><body>"
            f"<h3>Compute of study {study.name}</h3><p>{total['cells']:,} complete cells, {total['jobs']:,} with "
            f"Snakemake's benchmark file: {total['wall']:,.3f} h of job wall time, {total['cpu']:,.3f} h of CPU "
            f"time. Per cell: <code>tables/compute.parquet</code>.</p>{body}</body></html>\n")
    with store.atomic_write(path) as tmp:
        tmp.write_text(html)
    return path


# ---------------------------------------------------------------- GPU sampling


def engines_sentence(compute: dict) -> str:
    """The compute section's engine sentence: a warning when the cells mix engines."""
    if not compute.get("engines"):  # a compute table from before engines were recorded
        return ""
    if compute["n_engines"] > 1:
        return (f" **Warning: these cells come from {compute['n_engines']} engines** (prunegen/records/provenance.py), whose "
                f"numbers can differ in the last bits: {compute['engines']}.")
    return f" Engine: {compute['engines']}."


def page_row(study: Study, summary: pd.DataFrame) -> pd.DataFrame:
    """Cells, epochs trained (each once: a chain cell trains one cycle), seconds inside
    the cells, and, where Snakemake's benchmark files are there, seconds per job and
    the wall-clock span from the first job's start to the last cell's end."""
    epochs_per_cycle = summary["benchmark"].map({b: bm.train.epochs for b, bm in study.benchmarks.items()})
    job_seconds, starts, ends, cycles, machines, engines = 0.0, [], [], [], {}, []
    for row in summary.itertuples():
        cell = study.cell(row.benchmark, row.arm, int(row.level), float(row.noise), int(row.seed))
        cycles.append(chains.cycles_to_train(cell))  # the cycles this cell trained itself
        meta = store.read_cell_json(cell.dir) or {}
        engines.append(provenance.label(meta))
        m = meta.get("machine")
        what = provenance.machine_label(m) if m else "not recorded"
        hosts, n = machines.get(what, (set(), 0))
        machines[what] = (hosts | {m["host"]} if m else hosts, n + 1)
        tsv, marker = layout.benchmark_tsv(study.root, cell.relpath), cell.dir / layout.COMPLETE_MARKER
        if tsv.is_file() and marker.is_file():
            seconds = float(pd.read_csv(tsv, sep="\t")["s"].iloc[-1])
            job_seconds += seconds
            ends.append(marker.stat().st_mtime)
            starts.append(ends[-1] - seconds)
    return pd.DataFrame([{
        "study": study.name, "cells": len(summary),
        "epochs": int((np.array(cycles, dtype=np.int64) * epochs_per_cycle.to_numpy()).sum()),
        "cell_seconds": float(summary["wall_seconds"].sum()),
        "job_seconds": job_seconds if ends else float("nan"),
        "wall_seconds": max(ends) - min(starts) if ends else float("nan"),
        "machines": "; ".join(f"{what} ({n} cell{'s' if n != 1 else ''}"
                              + (f" on {len(hosts)} host{'s' if len(hosts) != 1 else ''})" if hosts else ")")
                              for what, (hosts, n) in sorted(machines.items(), key=lambda kv: -kv[1][1])),
        "engines": "; ".join(f"{e} ({n} cell{'s' if n != 1 else ''})" for e, n in provenance.tally(engines)),
        "n_engines": len(set(engines)),
    }])
