"""Which partition a job goes to: an administrator's partition-limits file, in the format of
the official Snakemake SLURM plugin (its `generate-slurm-partition-config` writes one), so
that an existing file works here:

    partitions:
      gpu-a100: {max_runtime: "2-00:00:00", max_gpu: 8, available_gpu_models: [a100], max_mem_mb: 512000}
      cpu:      {max_runtime: 1440, max_threads: 64, max_mem_mb: 256000}

A partition is eligible for a job when every limit it states holds the job's request
(GPUs, GPU model, CPUs, memory, minutes, constraint); among eligible partitions the best
fit wins: the largest sum of request over limit (the plugin's score), so a small job goes
where it uses the most of what a partition allows. One rule of prunegen's own: a job that
asks for no GPU goes to a partition without GPUs when one is eligible, so `merge` and
`figures` do not wait in a GPU queue or hold a GPU node's slot. No file: no routing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from .request import Request, SlurmError, parse_slurm_minutes

INF = math.inf


@dataclass(frozen=True)
class Limits:
    max_runtime: float = INF  # minutes
    max_mem_mb: float = INF
    max_mem_mb_per_cpu: float = INF
    max_cpus_per_task: float = INF
    max_threads: float = INF
    max_nodes: float = INF
    max_tasks: float = INF
    max_tasks_per_node: float = INF
    max_gpu: int = 0
    available_gpu_models: tuple[str, ...] | None = None
    max_cpus_per_gpu: float = INF
    supports_mpi: bool = True
    max_mpi_tasks: float = INF
    available_constraints: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Partition:
    name: str
    limits: Limits
    cluster: str | None = None


FIELDS = {f.name for f in dataclasses.fields(Limits)}


def read(path: str | Path) -> list[Partition]:
    """The partitions of a limits file; an error naming the file and the key it cannot use."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SlurmError(f"partition limits {path}: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("partitions"), dict):
        raise SlurmError(f"partition limits {path}: needs a 'partitions:' mapping of name -> limits")
    out = []
    for name, spec in raw["partitions"].items():
        spec = dict(spec or {})
        cluster = next((spec.pop(k) for k in ("slurm_cluster", "cluster", "clusters") if k in spec), None)
        unknown = sorted(set(spec) - FIELDS)
        if unknown:
            raise SlurmError(f"partition limits {path}: partition {name!r}: unknown key(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(FIELDS))})")
        try:
            if isinstance(spec.get("max_runtime"), str):
                spec["max_runtime"] = parse_slurm_minutes(spec["max_runtime"]) or INF
            for key in ("available_gpu_models", "available_constraints"):
                if spec.get(key) is not None:
                    spec[key] = tuple(str(x) for x in spec[key])
            out.append(Partition(str(name), Limits(**spec), cluster))
        except (TypeError, ValueError) as e:
            raise SlurmError(f"partition limits {path}: partition {name!r}: {e}") from None
    return out


def score(p: Partition, r: Request) -> float | None:
    """How well `r` fits `p` (higher: tighter); None when a limit of `p` does not hold it."""
    lim, total = p.limits, 0.0
    for need, limit in ((r.mem_mb or 0, lim.max_mem_mb), (r.runtime_min or 0, lim.max_runtime),
                        (r.cpus, lim.max_threads), (r.cpus, lim.max_cpus_per_task),
                        ((r.mem_mb or 0) / max(1, r.cpus), lim.max_mem_mb_per_cpu)):
        if need > limit:
            return None
        if need and not math.isinf(limit):
            total += need / limit
    if r.gpus:
        if r.gpus > lim.max_gpu:
            return None
        if r.gpu_model and lim.available_gpu_models and r.gpu_model not in lim.available_gpu_models:
            return None
        if r.cpus / r.gpus > lim.max_cpus_per_gpu:
            return None
        total += r.gpus / lim.max_gpu
    if r.constraint and lim.available_constraints:
        if not all(c.strip() in lim.available_constraints for c in r.constraint.split(",") if c.strip()):
            return None
    return total


def best(partitions: list[Partition], r: Request) -> str | None:
    """The partition `r` goes to, or None (no partition fits: the job keeps the default)."""
    fits = [(p, s) for p in partitions if (s := score(p, r)) is not None]
    if not r.gpus and any(p.limits.max_gpu == 0 for p, _ in fits):
        fits = [(p, s) for p, s in fits if p.limits.max_gpu == 0]
    if not fits:
        return None
    return max(fits, key=lambda ps: ps[1])[0].name  # first listed wins a tie
