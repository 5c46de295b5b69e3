"""`jobs.jsonl`: the SLURM jobs of a run, one line per job, in the run's submitit folder
(prunegen.records.layout: `.snakemake/submitit/<time>-<run id>/jobs.jsonl`). The executor
plugin appends a line per job it submits (its SLURM id, label, the cell folders it writes
and its log paths), since an array's `--comment` names the batch, not each task;
`prunegen status --watch` reads them to join jobs to cells."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..records.layout import JOBS_FILE, SUBMITIT_FOLDER


@dataclass(frozen=True)
class Job:
    job_id: str
    label: str
    stdout: str
    stderr: str
    # A warm worker job runs many cells, so its SLURM state is not each cell's: the executor
    # adds a line when a cell of it failed ("failed", with the error) or went back to the
    # queue ("queued": its worker was lost); "" for a cell's own job.
    outcome: str = ""
    detail: str = ""
    # A job sent again after a failure: why the last one failed and what its retry changed
    # (the executor's retry by cause: "OUT_OF_MEMORY: out of memory at 300 MB: retried with 450 MB").
    retried: str = ""


def append(run_folder: Path, jobs: list[dict]) -> None:
    """Append jobs (job_id, label, dirs, stdout, stderr) to the run's jobs.jsonl. One
    appending writer per file: the executor of that run."""
    lines = "".join(json.dumps({**job, "submitted": time.time()}) + "\n" for job in jobs)
    with open(Path(run_folder) / JOBS_FILE, "a") as f:
        f.write(lines)


def read_jobs(workdir: Path, folder: str = SUBMITIT_FOLDER) -> dict[str, Job]:
    """Cell folder (absolute) -> its latest job, over every run's jobs.jsonl in `workdir`."""
    out: dict[str, Job] = {}
    failures: dict[str, str] = {}  # cell folder -> why its last job failed
    for path in sorted((Path(workdir) / folder).glob(f"*/{JOBS_FILE}")):  # run folders sort by time
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line being appended this instant
            job = Job(str(row["job_id"]), row.get("label", ""), row.get("stdout", ""), row.get("stderr", ""),
                      row.get("outcome", ""), row.get("detail", ""))
            for d in row.get("dirs", []):
                d = str(Path(d).absolute())
                if job.outcome == "failed":
                    failures[d] = job.detail
                out[d] = job if job.outcome or d not in failures else dataclasses.replace(job, retried=failures[d])
    return out
