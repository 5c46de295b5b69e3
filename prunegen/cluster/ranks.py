"""Starting a data-parallel cell's ranks: one submitit multi-task job, on SLURM or locally.

The code path is one: a `ShellJob` (prunegen.cluster.slurm.job) runs in every task of the
job; `task()` gives each its rank's env:// variables (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT, from submitit's JobEnvironment); task 0 runs the cell's
`prunegen run-cell` and the others `prunegen rank` (prunegen.engine.ranks does the rest).
Only the executor differs: SLURM's (the plugin asks `--nodes`, `--ntasks-per-node`) or,
for a cell run locally, `launch_local`'s submitit.LocalExecutor (one node).
"""

from __future__ import annotations

import dataclasses
import os
import random
import shlex
import signal
import sys
import time
from pathlib import Path

LOCAL_TIMEOUT_MIN = 60 * 24 * 30  # a local job has no time limit of its own: a month


@dataclasses.dataclass(frozen=True)
class Task:
    rank: int
    world: int
    env: dict[str, str]


def task() -> Task | None:
    """This process's rank in a submitit job of several tasks, with its env:// variables;
    None outside one (or in a job of one task)."""
    import submitit  # (the cluster side only)

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


def launch_local(argv: list[str], world: int, gpus: int, folder: Path, stop_requested=lambda: None) -> int:
    """Run `prunegen run-cell argv` as `world` ranks on this machine: one submitit
    LocalExecutor job of `world` tasks, each a ShellJob. Waits for it; a TERM, INT or USR2
    to this process (or `stop_requested()`, a warm worker's flag) is passed on, so that the
    ranks checkpoint and stop. The tasks' output is copied to stderr. Returns the exit code
    rank 0's `run-cell` would: 0, 128 + the signal after a stop, 1 after a failure."""
    import submitit

    from .slurm.job import ShellJob

    folder.mkdir(parents=True, exist_ok=True)
    executor = submitit.LocalExecutor(folder=str(folder))
    executor.update_parameters(tasks_per_node=world, timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=gpus,
                               stderr_to_stdout=True, **_visible_gpus(gpus))
    command = shlex.join([sys.executable, "-m", "prunegen.cli", *argv])
    job = executor.submit(ShellJob(command, os.getcwd(), label="ranks"))
    got: list[int] = []

    def forward(signum, frame) -> None:
        got.append(signum)
        job._process.send_signal(signal.SIGTERM)  # the controller passes TERM on to every task

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)}
    try:
        while not job.done():
            asked = stop_requested()
            if asked is not None and not got:
                forward(asked, None)
            time.sleep(0.2)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    for rank in range(world):
        out = Path(job.task(rank).paths.stdout)
        text = out.read_text(errors="replace") if out.exists() else ""
        sys.stderr.write("".join(f"[rank {rank}] {line}\n" for line in text.splitlines()))
    if got:
        return 128 + got[0]
    try:
        job.results()
    except Exception as e:  # noqa: BLE001 - the ranks' failure, in their logs above
        print(f"prunegen: error: the cell's ranks failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e}",
              file=sys.stderr)
        return 1
    return 0


def _visible_gpus(gpus: int) -> dict:
    seen = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not gpus or not seen:
        return {}
    return {"visible_gpus": [int(d) for d in seen.split(",") if d.strip().isdigit()]}
