"""Starting a data-parallel cell's ranks: one submitit multi-task job, on SLURM or locally.

The code path is one: a `ShellJob` (prunegen.cluster.slurm.job) runs in every task of the
job; `task()` gives each its rank's env:// variables (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT, from submitit's JobEnvironment); task 0 runs the cell's
`prunegen run-cell` and the others `prunegen rank` (prunegen.engine.ranks does the rest).
Only the executor differs: SLURM's (the plugin asks `--nodes`, `--ntasks-per-node`) or,
for a cell run locally, prunegen.cluster.launch's submitit.LocalExecutor (one node).
"""

from __future__ import annotations

import dataclasses
import os
import random

import submitit


@dataclasses.dataclass(frozen=True)
class Task:
    rank: int
    world: int
    env: dict[str, str]


def task() -> Task | None:
    """This process's rank in a submitit job of several tasks, with its env:// variables;
    None outside one (or in a job of one task)."""
    job = submitit.JobEnvironment() if os.environ.get("SUBMITIT_EXECUTOR") else None
    if job is None or job.num_tasks <= 1:
        return None
    restart = os.environ.get("SLURM_RESTART_COUNT", "0")
    # A port of this job and run (a requeued job's old port may still be held), and rank 0's
    # host: the loopback on one node (a node name need not resolve), else the first node.
    port = random.Random(f"{job.job_id}-{restart}").randint(20000, 60000)
    addr = "127.0.0.1" if job.num_nodes == 1 else job.hostnames[0]
    env = {"MASTER_ADDR": addr, "MASTER_PORT": str(port), "RANK": str(job.global_rank),
           "WORLD_SIZE": str(job.num_tasks), "LOCAL_RANK": str(job.local_rank),
           "LOCAL_WORLD_SIZE": str(job.num_tasks // job.num_nodes)}
    threads = os.environ.get("SLURM_CPUS_PER_TASK")
    if threads and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = threads  # (task 0's command sets its own, as Snakemake's rule says)
    return Task(job.global_rank, job.num_tasks, env)
