"""What each cell job cost: the `compute` table, its summary for the report, and the GPU
sampler behind its GPU columns.

Per complete cell: Snakemake's benchmark file of its job
(`results/<study>/benchmarks/cells/<cell>.tsv`: wall seconds, CPU seconds, max RSS,
...), and where the job ran on a GPU, what the NVML sampler saw
(`<cell>.gpu.json` beside the TSV: device memory used at most, mean utilization, and
torch's own peak). A cell run without Snakemake (`prunegen run-cell` by hand) has no
TSV: its job columns are empty, the row is still there. NVML comes from the optional
`nvidia-ml-py` package (`pip install -e .[gpu]`); without it, or without a GPU, the
GPU columns are empty and nothing is sampled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from . import records
from .config import ARMS, Cell, Study

log = logging.getLogger("prunegen")

# Snakemake's benchmark TSV column -> table column (MB columns stay MB, as Snakemake writes them)
TSV_COLUMNS = {"s": "job_seconds", "cpu_time": "cpu_seconds", "max_rss": "max_rss_mb", "max_vms": "max_vms_mb",
               "max_uss": "max_uss_mb", "max_pss": "max_pss_mb", "io_in": "io_in_mb", "io_out": "io_out_mb",
               "mean_load": "mean_load"}
GPU_COLUMNS = ("gpu_name", "gpu_mem_used_max_mb", "gpu_util_mean", "gpu_util_max", "gpu_torch_peak_mb",
               "gpu_samples")
KEYS = ["benchmark", "arm", "noise", "seed", "level"]


def benchmark_tsv(study: Study, cell: Cell) -> Path:
    """Where Snakemake writes the cell job's benchmark file (workflow/rules/cells.smk)."""
    return study.root / "benchmarks" / "cells" / f"{cell.relpath}.tsv"


def gpu_json(study: Study, cell: Cell) -> Path:
    return study.root / "benchmarks" / "cells" / f"{cell.relpath}.gpu.json"


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
        rows.append({**key, **{c: math.nan for c in TSV_COLUMNS.values()},
                     **read_tsv(benchmark_tsv(study, cell)),
                     **{c: None for c in GPU_COLUMNS}, **read_gpu(gpu_json(study, cell))})
    df = pd.DataFrame(rows, columns=[*KEYS, *TSV_COLUMNS.values(), *GPU_COLUMNS])
    floats = [c for c in (*TSV_COLUMNS.values(), *GPU_COLUMNS) if c not in ("gpu_name", "gpu_samples")]
    df = df.astype({"noise": float, "seed": "int64", "level": "int64", **{c: float for c in floats},
                    "gpu_samples": "Int64", "gpu_name": "string"})
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
    rank = out["arm"].map({a: i for i, a in enumerate(ARMS)})
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
    with records.atomic_write(path) as tmp:
        tmp.write_text(html)
    return path


# ---------------------------------------------------------------- GPU sampling

def _nvml():
    try:
        import pynvml  # nvidia-ml-py: optional (the [gpu] extra)
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        log.info("NVML unavailable (%s): no GPU samples", e)
        return None
    return pynvml


def _handle(nvml, device):
    """The NVML handle of torch's device (by UUID: CUDA_VISIBLE_DEVICES renumbers devices)."""
    import torch

    try:
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    except Exception:  # noqa: BLE001 - an older driver or torch: fall back to the index
        return nvml.nvmlDeviceGetHandleByIndex(device.index or 0)


@contextlib.contextmanager
def gpu_sampler(path: Path, device, interval: float = 1.0):
    """Sample the GPU's memory use and utilization every `interval` seconds while the
    block runs, then write the figures to `path` (atomically). A no-op off CUDA or
    without NVML."""
    nvml = _nvml() if getattr(device, "type", None) == "cuda" else None
    if nvml is None:
        yield
        return
    import torch

    handle = _handle(nvml, device)
    mem, util, stop = [], [], threading.Event()

    def sample() -> None:
        while True:
            mem.append(nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20)
            util.append(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=sample, name="gpu-sampler", daemon=True)
    torch.cuda.reset_peak_memory_stats(device)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        name = nvml.nvmlDeviceGetName(handle)
        records.write_json({
            "gpu_name": name.decode() if isinstance(name, bytes) else name,
            "gpu_mem_used_max_mb": float(np.max(mem)), "gpu_util_mean": float(np.mean(util)),
            "gpu_util_max": float(np.max(util)), "gpu_samples": len(mem), "interval_s": interval,
            "gpu_torch_peak_mb": torch.cuda.max_memory_reserved(device) / 2**20,
        }, path)
        nvml.nvmlShutdown()
