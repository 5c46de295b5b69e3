"""A data-parallel cell's ranks on this machine: `prunegen run-cell` outside a job of several
tasks starts them as one submitit LocalExecutor job of `world` tasks, each the same
ShellJob a SLURM job's tasks run (prunegen.cluster.ranks), and waits for it."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from pathlib import Path

import submitit

from .slurm.job import ShellJob

LOCAL_TIMEOUT_MIN = 60 * 24 * 30  # a local job has no time limit of its own: a month


def launch_local(argv: list[str], world: int, gpus: int, folder: Path, stop_requested=lambda: None) -> int:
    """Run `prunegen run-cell argv` as `world` ranks on this machine: one submitit
    LocalExecutor job of `world` tasks, each a ShellJob. Waits for it; a TERM, INT or USR2
    to this process (or `stop_requested()`, a warm worker's flag) is passed on, so that the
    ranks checkpoint and stop. The tasks' output is copied to stderr. Returns the exit code
    rank 0's `run-cell` would: 0, 128 + the signal after a stop, 1 after a failure."""
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
