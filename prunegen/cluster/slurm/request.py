"""What a SLURM job asks for: resources (GPUs, CPUs, memory in MB, minutes, partition,
account, constraint, QOS, extra sbatch flags) as submitit's SlurmExecutor parameters, and
what a partition allows (its MaxTime, from `scontrol show partition`). No submitit here:
the executor that sends a `Request` is built in prunegen.cluster.slurm.submit."""

from __future__ import annotations

import dataclasses
import logging
import re
import shlex
import subprocess
from typing import Callable

log = logging.getLogger(__name__)


class SlurmError(RuntimeError):
    pass


def parse_sbatch_flags(flags: str | None) -> dict[str, object]:
    """``"--qos=high --exclusive -C a100"`` -> ``{"qos": "high", "exclusive": True,
    "constraint": "a100"}`` (submitit's ``additional_parameters``: one ``#SBATCH`` line each)."""
    short = {"-p": "partition", "-A": "account", "-C": "constraint", "-q": "qos", "-t": "time",
             "-c": "cpus-per-task", "-G": "gpus", "-w": "nodelist", "-x": "exclude",
             "-J": "job-name", "-N": "nodes", "-n": "ntasks", "-L": "licenses", "-d": "dependency"}
    out: dict[str, object] = {}
    words = shlex.split(flags or "")
    i = 0
    while i < len(words):
        w = words[i]
        if w.startswith("--"):
            key, eq, value = w[2:].partition("=")
            if eq:
                out[key] = value
            elif i + 1 < len(words) and not words[i + 1].startswith("-"):
                out[key] = words[i + 1]
                i += 1
            else:
                out[key] = True
        elif w.startswith("-") and len(w) >= 2:
            key = short.get(w[:2])
            if key is None:
                raise SlurmError(f"unknown short sbatch flag {w!r} in {flags!r}: use the --long form")
            if len(w) > 2:
                out[key] = w[2:].lstrip("=")
            elif i + 1 < len(words):
                out[key] = words[i + 1]
                i += 1
            else:
                raise SlurmError(f"sbatch flag {w!r} needs a value in {flags!r}")
        else:
            raise SlurmError(f"cannot parse {w!r} in sbatch flags {flags!r}")
        i += 1
    return out


@dataclasses.dataclass(frozen=True)
class Request:
    """What one SLURM job asks for. Hashable: jobs with equal requests share one array."""

    cpus: int = 1
    mem_mb: int | None = None
    runtime_min: int | None = None
    gpus: int = 0
    gpu_model: str | None = None
    nodes: int = 1  # a data-parallel cell: its nodes, and ranks (tasks) per node (prunegen.cluster.ranks)
    tasks: int = 1
    partition: str | None = None
    account: str | None = None
    constraint: str | None = None
    qos: str | None = None
    extra: str | None = None  # further sbatch flags, e.g. "--exclusive --mail-type=END"
    job_name: str = "prunegen"
    comment: str | None = None  # e.g. the rule and cell wildcards: shown by squeue %k, sacct Comment
    exclude: str | None = None  # nodes left out (retry.Nodes: node-level failures), "a,b"

    def submitit_parameters(self) -> dict:
        """Parameters for ``submitit.SlurmExecutor.update_parameters``."""
        p: dict = {"job_name": self.job_name, "nodes": max(1, int(self.nodes)),
                   "ntasks_per_node": max(1, int(self.tasks)),
                   "cpus_per_task": max(1, int(self.cpus)), "wckey": None}
        if self.mem_mb is not None:
            p["mem"] = f"{int(self.mem_mb)}M"
        if self.runtime_min is not None:
            p["time"] = max(1, int(self.runtime_min))
        if self.gpus:
            p["gpus_per_node"] = f"{self.gpu_model}:{int(self.gpus)}" if self.gpu_model else int(self.gpus)
        for key in ("partition", "account", "constraint", "qos", "exclude"):
            if getattr(self, key):
                p[key] = getattr(self, key)
        extra = parse_sbatch_flags(self.extra)
        if self.exclude and extra.get("exclude"):  # the researcher's own --exclude and the run's, together
            p["exclude"] = ",".join(dict.fromkeys(f"{extra.pop('exclude')},{self.exclude}".split(",")))
        if self.comment and "comment" not in extra:  # a --comment in the extra flags wins
            p["comment"] = _sbatch_safe(self.comment)
        if extra:
            p["additional_parameters"] = extra
        return p


def _sbatch_safe(text: str, limit: int = 1000) -> str:
    """``text`` as one ``#SBATCH --comment=`` value: no blanks, quotes or newlines (sbatch
    splits an #SBATCH line at blanks), bounded length."""
    text = re.sub(r"[\s\"'\\]+", "_", text.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def signal_delay_for(runtime_min: int | None, signal_delay_s: int) -> int:
    """How long before the time limit SLURM signals (USR2) a job of ``runtime_min`` minutes:
    ``signal_delay_s``, but at most a quarter of the limit. A delay as long as the limit (120 s
    on a 2-minute job) has SLURM signal the job as soon as it starts: it would be stopped and
    requeued before it did anything. (SLURM checks time limits every 30 s and signals up to
    that much early: on a 1-minute limit USR2 comes 15 to 45 s into the run.)"""
    delay = int(signal_delay_s)
    if runtime_min:
        delay = min(delay, max(1, int(runtime_min) * 15))
    return max(0, delay)


def parse_slurm_minutes(text: str) -> int | None:
    """SLURM's time limit spelling -> minutes; None for UNLIMITED/INFINITE/unset.
    ``"30"``, ``"1:30:00"``, ``"2-00:00:00"``, ``"1-12"``, ``"45:00"``."""
    t = text.strip()
    if not t or t.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A"):
        return None
    days = 0
    if "-" in t:
        d, _, t = t.partition("-")
        days = int(d)
        parts = [int(x) for x in t.split(":")]  # days-hours[:minutes[:seconds]]
        parts += [0] * (3 - len(parts))
        h, m, sec = parts
    else:
        parts = [int(x) for x in t.split(":")]
        if len(parts) == 1:
            h, m, sec = 0, parts[0], 0
        elif len(parts) == 2:
            h, m, sec = 0, parts[0], parts[1]
        else:
            h, m, sec = parts
    return days * 1440 + h * 60 + m + (1 if sec else 0)


def partition_max_minutes(partition: str | None,
                          runner: Callable[..., subprocess.CompletedProcess] | None = None) -> int | None:
    """The partition's MaxTime in minutes (``scontrol show partition``; the Default=YES
    one when ``partition`` is None); None when unlimited or when scontrol cannot say."""
    run = runner or (lambda a: subprocess.run(a, stdin=subprocess.DEVNULL, capture_output=True,
                                              text=True, timeout=60))
    args = ["scontrol", "show", "partition", "-o"] + ([partition] if partition else [])
    try:
        p = run(args)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("%s failed: %s: time limits are not checked against the partition", " ".join(args), e)
        return None
    if p.returncode != 0:
        log.warning("%s failed: %s: time limits are not checked against the partition",
                    " ".join(args), (p.stderr or p.stdout).strip())
        return None
    for line in p.stdout.splitlines():
        f = parse_scontrol_line(line)
        if not f or (partition is None and f.get("Default") != "YES"):
            continue
        try:
            return parse_slurm_minutes(f.get("MaxTime", ""))
        except ValueError:
            log.warning("cannot read MaxTime=%r of partition %s", f.get("MaxTime"), f.get("PartitionName"))
            return None
    return None


_FIELD = re.compile(r"(?:^|\s)([A-Za-z][\w:/.]*)=")


def parse_scontrol_line(line: str) -> dict[str, str]:
    line = line.strip()
    matches = list(_FIELD.finditer(line))
    fields: dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        fields[m.group(1)] = line[m.end():end].strip()
    return fields
