"""What a study (or a slice of it) will cost before it is submitted: `prunegen plan`.

Per benchmark and arm: cells in the grid, jobs still to run (the cells Snakemake would
run: not complete with the current hash, or reading a cell that runs), the cycles and
epochs those jobs train, the estimated device-hours (a job's wall time), the GPU-hours (its wall time
x the GPUs it holds, `resources.gpus` x `resources.nodes`) and the longest single job.

A job trains `cycles` x `train.epochs` epochs (a `downscaled_extended` cell at level k has
k+1 cycles behind it, `cycles_unshared`, of which its job trains those its shared prefix
has not, prunegen.study.chains; every other cell one). Its seconds per epoch come from, in order:

1. `measured`: completed cells of the study, wall time (`cell.json`: data, training,
   evaluation, records) over the epochs the cell trained, median over the cells of the
   same (benchmark, arm, level), else of the same (benchmark, arm), else the benchmark;
2. `calibrated`: `results/<study>/calibration.json`, written by `prunegen plan
   --calibrate` (prunegen.cluster.calibrate: a few hundred steps timed on this device);
3. `runtime_min`: the study's resources, which are minutes per cycle.

Reads only `cell.json` files and the calibration file; imports no torch (the downscaled
widths, which decide the shared prefixes, are counted from prunegen.study.shapes).
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..records import layout, store
from ..study import chains
from ..study.arm_specs import ARMS
from ..study.grid import Cell, Study, StudyError
from ..study.selection import cells as selected_cells

SOURCES = ("measured", "calibrated", "runtime_min")
COLUMNS = ["benchmark", "arm", "cells", "jobs", "cycles_unshared", "cycles", "epochs", "epoch_s", "device_hours",
           "gpu_hours", "longest_job_h", "source"]



def calibration_path(study: Study) -> Path:
    return layout.calibration(study.root)


def read_calibration(study: Study) -> dict[str, float]:
    """Benchmark -> seconds per epoch from the calibration file, if there is one."""
    path = calibration_path(study)
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {b: float(v["epoch_seconds"]) for b, v in raw["benchmarks"].items() if b in study.benchmarks}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise StudyError(f"{path}: not a calibration file ({e}); delete it or run `prunegen plan --calibrate`") from None


@dataclass
class EpochTimes:
    """Seconds per epoch for a cell, and where the figure came from."""

    measured: dict[tuple, list[float]]  # (benchmark, arm, level) / (benchmark, arm) / (benchmark,) -> samples
    calibrated: dict[str, float]
    study: Study

    def __call__(self, cell: Cell) -> tuple[float, str]:
        b = cell.benchmark.name
        for key in ((b, cell.arm, cell.level), (b, cell.arm), (b,)):
            if key in self.measured:
                return statistics.median(self.measured[key]), "measured"
        if b in self.calibrated:
            return self.calibrated[b], "calibrated"
        return cell.benchmark.resources.runtime_min * 60 / cell.benchmark.train.epochs, "runtime_min"


def _states(study: Study, cells: list[Cell]) -> tuple[dict[str, str], dict[tuple, list[float]]]:
    """Each cell's state (complete / stale / missing) and the measured seconds per epoch
    of the complete cells of the whole grid (a slice is estimated from all of it)."""
    states, measured = {}, {}
    for c in {c.relpath: c for c in [*study.cells(), *cells]}.values():
        meta = store.read_cell_json(c.dir)
        if meta is None:
            states[c.relpath] = "missing"
            continue
        if meta.get("cell_hash") != c.hash:
            states[c.relpath] = "stale"
            continue
        states[c.relpath] = "complete"
        trained = len(meta.get("cycles_trained") or [0]) * c.benchmark.train.epochs
        seconds = meta.get("wall_seconds")
        if isinstance(seconds, (int, float)) and seconds > 0 and trained:
            b = c.benchmark.name
            for key in ((b, c.arm, c.level), (b, c.arm), (b,)):
                measured.setdefault(key, []).append(seconds / trained)
    return states, measured


def jobs(study: Study, select: str | None = None) -> pd.DataFrame:
    """One row per cell of the grid (or slice): keys, state, `runs` (a job Snakemake
    would run), cycles, epochs, seconds per epoch, its source, and the job's hours."""
    cells = selected_cells(study, select)
    states, measured = _states(study, cells)
    times = EpochTimes(measured, read_calibration(study), study)
    runs: dict[str, bool] = {}

    def will_run(c: Cell) -> bool:  # not complete, or reads a cell that runs (its input is newer)
        if c.relpath not in runs:
            runs[c.relpath] = states[c.relpath] != "complete" or any(will_run(p) for p in chains.parents(c))
        return runs[c.relpath]

    rows = []
    for c in cells:
        epoch_s, source = times(c)
        cycles = chains.cycles_to_train(c)
        epochs = cycles * c.benchmark.train.epochs
        rows.append({**c.key, "label": c.label, "state": states[c.relpath], "runs": will_run(c),
                     "cycles_unshared": chains.cycles_unshared(c), "cycles": cycles, "epochs": epochs, "epoch_s": epoch_s, "source": source,
                     "hours": epochs * epoch_s / 3600,
                     # a cell's time on each of the GPUs it holds (gpus per node x nodes; 0: a CPU cell)
                     "gpu_hours": epochs * epoch_s / 3600 * c.benchmark.resources.gpus * c.benchmark.resources.nodes,
                     "requested_min": c.benchmark.resources.runtime_min * cycles})
    return pd.DataFrame(rows)


def summarize(per_job: pd.DataFrame) -> pd.DataFrame:
    """Per benchmark and arm (in the study's vocabulary order): grid cells, jobs to run,
    and the cycles, epochs, device-hours and longest job of those jobs."""
    todo = per_job[per_job["runs"]]
    g = per_job.groupby(["benchmark", "arm"], sort=False)
    t = todo.groupby(["benchmark", "arm"], sort=False)
    out = pd.DataFrame({"cells": g.size()})
    out["jobs"] = t.size()
    out["cycles_unshared"] = t["cycles_unshared"].sum()
    out["cycles"], out["epochs"], out["device_hours"] = t["cycles"].sum(), t["epochs"].sum(), t["hours"].sum()
    out["gpu_hours"] = t["gpu_hours"].sum()
    out["longest_job_h"] = t["hours"].max()
    out["epoch_s"] = out["device_hours"] * 3600 / out["epochs"]
    out["source"] = t["source"].agg(lambda s: "+".join(x for x in SOURCES if x in set(s)))
    out = out.reset_index().fillna({"jobs": 0, "cycles_unshared": 0, "cycles": 0, "epochs": 0, "device_hours": 0.0, "gpu_hours": 0.0, "source": ""})
    out = out.astype({"jobs": "int64", "cycles_unshared": "int64", "cycles": "int64", "epochs": "int64"})
    bench = {b: i for i, b in enumerate(per_job["benchmark"].unique())}  # the study's order
    out = out.assign(_b=out["benchmark"].map(bench), _r=out["arm"].map({a: i for i, a in enumerate(ARMS)}))
    return out.sort_values(["_b", "_r"], kind="stable")[COLUMNS].reset_index(drop=True)


_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time_limit(text: str) -> float:
    """A SLURM time limit in minutes: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (as sbatch -t)."""
    m = _SLURM_TIME.match(str(text).strip())
    if not m:
        raise StudyError(f"--partition-limit {text!r}: not a SLURM time (minutes, H:M:S, D-H:M:S)")
    days, a, b, c = m.groups()
    if days is not None:  # D-H, D-H:M, D-H:M:S
        h, mi, s = int(a), int(b or 0), int(c or 0)
        return int(days) * 1440 + h * 60 + mi + s / 60
    if c is not None:
        return int(a) * 60 + int(b) + int(c) / 60
    return int(a) + (int(b) / 60 if b is not None else 0)


def over_limit(per_job: pd.DataFrame, limit_min: float) -> pd.DataFrame:
    """Jobs to run whose estimate, or whose requested time (runtime_min x cycles), exceeds
    the partition's limit: the first is killed at its limit, the second never starts."""
    todo = per_job[per_job["runs"]]
    bad = todo[(todo["hours"] * 60 > limit_min) | (todo["requested_min"] > limit_min)]
    return bad[["label", "hours", "requested_min"]].reset_index(drop=True)


def plan(study: Study, select: str | None = None, partition_limit: str | None = None) -> dict:
    """The plan as plain data (what --json prints)."""
    per_job = jobs(study, select)
    table = summarize(per_job)
    todo = per_job[per_job["runs"]]
    out = {
        "study": study.name, "select": select or None,
        "cells": int(len(per_job)), "jobs": int(len(todo)),
        # the workflow's other jobs (merge, figures, all) run whenever a cell does
        "other_jobs": 3 if len(todo) else 0,
        "cycles_unshared": int(todo["cycles_unshared"].sum()),
        "cycles": int(todo["cycles"].sum()), "epochs": int(todo["epochs"].sum()),
        "device_hours": float(todo["hours"].sum()),
        "gpu_hours": float(todo["gpu_hours"].sum()) if len(todo) else 0.0,
        "longest_job_h": float(todo["hours"].max()) if len(todo) else 0.0,
        "longest_job": todo.loc[todo["hours"].idxmax(), "label"] if len(todo) else None,
        "sources": {s: int((todo["source"] == s).sum()) for s in SOURCES},
        "table": table.to_dict("records"),
    }
    if partition_limit is not None:
        limit = parse_time_limit(partition_limit)
        bad = over_limit(per_job, limit)
        out["partition_limit_min"] = limit
        out["over_limit"] = bad.to_dict("records")
    return out


def format_plan(p: dict) -> str:
    table = pd.DataFrame(p["table"], columns=COLUMNS)
    total = {"benchmark": "total", "arm": "", "cells": p["cells"], "jobs": p["jobs"],
             "cycles_unshared": p["cycles_unshared"], "cycles": p["cycles"],
             "epochs": p["epochs"], "device_hours": p["device_hours"], "gpu_hours": p["gpu_hours"], "longest_job_h": p["longest_job_h"],
             "epoch_s": p["device_hours"] * 3600 / p["epochs"] if p["epochs"] else float("nan"), "source": ""}
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    text = table.to_string(index=False, formatters={
        "cells": "{:,}".format, "jobs": "{:,}".format, "cycles_unshared": "{:,}".format, "cycles": "{:,}".format, "epochs": "{:,}".format,
        "epoch_s": "{:.2f}".format, "device_hours": "{:,.2f}".format, "gpu_hours": "{:,.2f}".format, "longest_job_h": "{:.2f}".format})
    lines = [f"study {p['study']}" + (f", select {p['select']!r}" if p["select"] else "")
             + f": {p['cells']:,} cells, {p['jobs']:,} jobs to run (+ {p['other_jobs']} merge/figures/all)", text, "",
             f"{p['jobs']:,} jobs, {p['cycles']:,} cycles ({p['cycles_unshared']:,} without shared prefixes), "
             f"{p['epochs']:,} epochs, "
             f"{p['device_hours']:,.2f} device-hours ({p['gpu_hours']:,.2f} GPU-hours: each job's hours x its "
             f"GPUs, resources.gpus x resources.nodes); longest job {p['longest_job_h']:.2f} h"
             + (f" ({p['longest_job']})" if p["longest_job"] else "")]
    lines.append("epoch times: " + ", ".join(f"{n:,} jobs {s}" for s, n in p["sources"].items() if n)
                 if p["jobs"] else "epoch times: nothing to run")
    if "over_limit" in p:
        bad = p["over_limit"]
        lines.append(f"partition limit {p['partition_limit_min']:g} min: "
                     + (f"{len(bad):,} jobs exceed it (estimate or requested time):" if bad else "no job exceeds it"))
        lines += [f"  {b['label']}: estimate {b['hours'] * 60:.0f} min, requests {b['requested_min']:.0f} min"
                  for b in bad[:20]]
        if len(bad) > 20:
            lines.append(f"  ... and {len(bad) - 20:,} more (--json lists them all)")
    return "\n".join(lines) + "\n"
