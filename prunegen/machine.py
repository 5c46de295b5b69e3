"""What a cell ran on, as it records it in cell.json: enough to say on a results page
which machines (and how many CPUs each) produced a study's numbers."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux), else what the platform says, else the architecture."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    """CPUs this process may run on (a SLURM job's allocation, not the node's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def describe(torch_threads: int, gpu: str | None) -> dict:
    return {"host": platform.node(), "cpu": cpu_model(), "cpus": usable_cpus(), "torch_threads": torch_threads,
            "gpu": gpu, "os": f"{platform.system()} {platform.release()}",
            "slurm_job": os.environ.get("SLURM_JOB_ID")}


def label(m: dict) -> str:
    """One line for a results page: '2 x AMD EPYC CPUs, 1 torch thread' (+ the GPU)."""
    s = f"{m['cpus']} x {m['cpu']} CPU{'s' if m['cpus'] != 1 else ''}, {m['torch_threads']} torch " \
        f"thread{'s' if m['torch_threads'] != 1 else ''} per cell"
    return s + (f", GPU {m['gpu']}" if m.get("gpu") else "")
