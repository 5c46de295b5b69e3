"""What a Snakemake job asks of SLURM, and how it is named: pure functions of the job
(Snakemake's `JobExecutorInterface`, or anything shaped like it), tested without a cluster.

- `request`: the job's resources as a prunegen.cluster.slurm.request.Request: threads (or
  `cpus_per_task`) -> `--cpus-per-task`, `gpus` (and `gpu_model`) -> `--gpus-per-node`,
  `mem_mb` -> `--mem`, `nodes` and `tasks` (a data-parallel cell's ranks per node) ->
  `--nodes`, `--ntasks-per-node`, `runtime` (minutes, capped at the partition's MaxTime) -> `--time`,
  `slurm_partition`, `slurm_account`, `constraint`, `qos`, `slurm_extra`; the plugin's
  settings give the defaults.
- `comment`: a batch's `--comment` (the rule and the wildcards of its tasks).
- `label`, `progress_dirs`: how a job is named in logs, and the folders its cells write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional

from prunegen.cluster.slurm.request import Request


def resource(job, *names, default=None):
    """The first of ``names`` that the job's resources set (Snakemake's TBD/None skipped)."""
    for name in names:
        value = job.resources.get(name)
        if value is not None and str(value) not in ("", "None", "<TBD>"):
            return value
    return default


def as_int(value, default=None):
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def request(job, settings, job_name: str, max_minutes: Callable[[Optional[str]], Optional[int]],
            route: Optional[Callable[[Request], Optional[str]]] = None) -> Request:
    """What SLURM is asked for on behalf of ``job`` (a rule job or a group job). ``route``
    picks the partition of a job whose rule names none (a partition-limits file)."""
    s = settings
    members = list(job.jobs) if job.is_group() else [job]
    gpus = as_int(resource(job, "gpus", "gpu", "gpus_per_node"), 0)
    if job.is_group() and s.group_gpus == "share":
        gpus = max((as_int(resource(m, "gpus", "gpu", "gpus_per_node"), 0) for m in members), default=0)
    cpus = as_int(resource(job, "cpus_per_task"), None) or max(1, as_int(job.threads, 1))
    extra = " ".join(x for x in (s.sbatch_extra, resource(job, "slurm_extra")) if x) or None
    named = resource(job, "slurm_partition", "partition")
    partition = named or s.partition
    runtime = as_int(resource(job, "runtime"))
    if named is None and route is not None:
        partition = route(Request(cpus=cpus, mem_mb=as_int(resource(job, "mem_mb")), runtime_min=runtime, gpus=gpus,
                                  gpu_model=resource(job, "gpu_model"),
                                  constraint=resource(job, "constraint", default=s.constraint))) or partition
    cap = max_minutes(partition)
    if runtime is not None and cap is not None and runtime > cap:
        runtime = cap  # the time-outs requeue it; the cell resumes (the executor says so)
    return Request(
        cpus=cpus,
        mem_mb=_at_least(as_int(resource(job, "mem_mb")), getattr(s, "min_mem_mb", 0)),
        runtime_min=runtime,
        gpus=gpus,
        gpu_model=resource(job, "gpu_model"),
        nodes=_per_cell(job, "nodes"),
        tasks=_per_cell(job, "tasks"),
        partition=partition,
        account=resource(job, "slurm_account", "account", default=s.account),
        constraint=resource(job, "constraint", default=s.constraint),
        qos=resource(job, "qos", default=s.qos),
        extra=extra,
        job_name=job_name,
    )


def _at_least(mem_mb: Optional[int], floor: Optional[int]) -> Optional[int]:
    """The job's memory, raised to the executor's floor (min_mem_mb); None stays None (SLURM's default)."""
    return max(mem_mb, int(floor)) if mem_mb is not None and floor else mem_mb


def ranks(job) -> int:
    """The ranks of a job's cell (nodes x tasks): more than one, it is data-parallel."""
    return _per_cell(job, "nodes") * _per_cell(job, "tasks")


def _per_cell(job, name: str) -> int:
    """A cell's nodes or tasks: of a group job, the most any member asks (Snakemake sums a
    group's resources: 22 packed one-node cells would ask --nodes=22, which no partition has)."""
    members = list(job.jobs) if job.is_group() else [job]
    return max((max(1, as_int(resource(m, name), 1) or 1) for m in members), default=1)


def progress_dirs(job) -> List[str]:
    """The folders of the job's outputs: a cell writes its epoch checkpoint there."""
    members = list(job.jobs) if job.is_group() else [job]
    return sorted({str(Path(str(f)).parent.absolute()) for m in members for f in (m.output or [])})


def wildcards(job) -> Dict[str, str]:
    return {k: str(v) for k, v in dict(getattr(job, "wildcards", {}) or {}).items()}


def comment(batch: list) -> str:
    """``cell:benchmark=digits-mlp,arm=imp,level=2`` for one job; for an array, the
    wildcards its tasks share, and the values of the others in task order (a|b|c)."""
    job = batch[0]
    rule = f"group-{job.groupid}" if job.is_group() else job.name
    if job.is_group():
        return f"{rule}[{len(batch)}]:" + ",".join(sorted({m.name for j in batch for m in j.jobs}))
    values: Dict[str, List[str]] = {}
    for j in batch:
        for k, v in wildcards(j).items():
            values.setdefault(k, []).append(v)
    parts = [f"{k}={'|'.join(dict.fromkeys(v))}" for k, v in values.items()]
    rule = "+".join(sorted({j.name for j in batch}))  # jobs of several rules may share a request
    head = rule if len(batch) == 1 else f"{rule}[{len(batch)}]"
    return head + (":" + ",".join(parts) if parts else "")


def label(job) -> str:
    if job.is_group():
        return f"group {job.groupid} ({len(list(job.jobs))} jobs)"
    wc = ",".join(f"{k}={v}" for k, v in dict(getattr(job, "wildcards", {}) or {}).items())
    return f"rule {job.name}" + (f" [{wc}]" if wc else "")


def runtime_asked(batch: list) -> int:
    """The most minutes any job of the batch asks for (0 when none says)."""
    return max((as_int(resource(j, "runtime"), 0) for j in batch), default=0)
