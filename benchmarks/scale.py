"""Scale of the SLURM path (issue 17, item 7): a study of N one-epoch digits cells (default
1,000) pushed through the `prunegen` executor plugin (`snakemake --profile profiles/slurm`)
on the test cluster of tests/slurm, then `merge`.

    bash tests/slurm/start.sh                     # the test cluster (accounting on)
    .venv/bin/python benchmarks/scale.py          # 1,000 cells
    .venv/bin/python benchmarks/scale.py --cells 12 --jobs 12   # what tests/slurm runs
    .venv/bin/python benchmarks/scale.py --cells 200 --workers 8 --compare   # warm workers vs one job per cell

Reported (printed, and as JSON in benchmarks/out/scale-<N>.json):

- sbatch calls and status calls (sacct / squeue / scontrol), counted by a PATH shim that
  logs every call Snakemake's process tree makes -- not the executor's own report (which
  is printed next to it);
- wall time of the run, and the SLURM side of it (first submission to the last job's end,
  from sacct), and jobs per minute;
- the executor's own CPU time per job: the CPU time (user + sys) of the Snakemake process
  and everything it ran (sbatch, sacct, squeue, ...), less that of a dry run of the same
  study (parsing the Snakefile and building the DAG), divided by the number of jobs;
- Snakemake's peak memory (max RSS of the Snakemake process, from getrusage), and the
  dry run's, for comparison;
- with `--workers N` (the profile's prunegen-workers; default 0, one SLURM job per cell):
  cells per SLURM job (cells over the jobs that ran cells, from sacct), and with
  `--compare` the same study run both ways, one after the other, and the ratio of their
  wall times.

The jobs themselves run under slurmd, not under Snakemake, so none of their CPU time or
memory is counted above. The test cluster is one node with this machine's CPUs: the wall
time is bounded by running N cell jobs (each a Python process that starts Snakemake for
its job, then the cell) on them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
SHIMMED = ("sbatch", "sacct", "squeue", "scontrol", "scancel")


def study(n: int) -> dict:
    return {
        "study": "scale", "device": "cpu",
        "benchmarks": {"digits-tiny": {
            "dataset": "digits", "model": {"name": "mlp", "hidden": [64, 32]}, "data": {"val_size": 180},
            "train": {"epochs": 1, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 1.0e-4},
            "prune": {"fraction": 0.2},
            "resources": {"gpus": 0, "cpus": 1, "mem_mb": 1500, "runtime_min": 10}}},
        "arms": ["dense"], "levels": 0, "noise": [0.0], "seeds": list(range(n)),
    }


def make_shim(bindir: Path, log: Path) -> None:
    """sbatch/sacct/squeue/scontrol/scancel that log each call (time, name, exit code), then
    behave as the real ones."""
    bindir.mkdir(parents=True, exist_ok=True)
    for name in SHIMMED:
        real = shutil.which(name)
        if real is None:
            raise SystemExit(f"{name} not found: start the test cluster first (bash tests/slurm/start.sh)")
        (bindir / name).write_text(
            f'#!/bin/bash\n{real} "$@"; rc=$?\nprintf "%s\\t%s\\t%s\\t%s\\n" "$(date +%s.%N)" {name} "$rc" "$1 $2" >> {log}\n'
            "exit $rc\n")
        (bindir / name).chmod(0o755)
    log.touch()


def run_measured(cmd: list[str], env: dict, log: Path, timeout: float) -> dict:
    """Run ``cmd`` to its end; its wall time, and CPU time and max RSS of its process tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                           timeout=timeout)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"rc": p.returncode, "wall_s": wall,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            # ru_maxrss of children: the largest of them (Snakemake itself), in KiB on Linux
            "max_rss_mib": after.ru_maxrss / 1024}


def sacct_span(workdir: Path) -> dict:
    """From accounting: the jobs that ran in ``workdir``, their states and time span."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "now-1days", "-o", "JobID,State,Submit,Start,End,WorkDir"],
                         capture_output=True, text=True).stdout
    rows = [l.split("|") for l in out.splitlines() if l.endswith("|" + str(workdir))]
    to_t = lambda s: time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%S"))  # noqa: E731
    done = [r for r in rows if r[1] == "COMPLETED"]
    states: dict[str, int] = {}
    for r in rows:
        states[r[1].split()[0]] = states.get(r[1].split()[0], 0) + 1
    span = (max(to_t(r[4]) for r in done) - min(to_t(r[2]) for r in done)) if done else 0.0
    run = sum(to_t(r[4]) - to_t(r[3]) for r in done)
    return {"jobs": len(rows), "states": states, "submit_to_last_end_s": span,
            "job_runtime_mean_s": run / len(done) if done else 0.0}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=None,
                    help="Snakemake --jobs (SLURM jobs queued at once); default: the number of cells")
    ap.add_argument("--poll-s", type=int, default=None,
                    help="--seconds-between-status-checks (default: the profile's 10 s)")
    ap.add_argument("--timeout-s", type=float, default=6 * 3600)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    ap.add_argument("--workers", type=int, default=0, help="--prunegen-workers (0: one SLURM job per cell)")
    ap.add_argument("--compare", action="store_true", help="run with --workers 0 first, then --workers N, "
                    "and report both and the ratio of their wall times")
    a = ap.parse_args(argv)
    if a.compare:
        if a.workers <= 0:
            raise SystemExit("--compare needs --workers N > 0")
        rest = [x for x in (argv if argv is not None else sys.argv[1:]) if x != "--compare"]
        one = main(rest + ["--workers", "0"])
        warm = main(rest + ["--workers", str(a.workers)])
        res = {"one_job_per_cell": one, "workers": warm, "wall_ratio": warm["wall_s"] / one["wall_s"],
               "cells_per_job": {"one_job_per_cell": one["cells_per_job"], "workers": warm["cells_per_job"]}}
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / f"scale-{a.cells}-compare.json").write_text(json.dumps(res, indent=2) + "\n")
        print(f"scale, {a.cells} cells: one job per cell {one['wall_s']:.0f} s ({one['cells_per_job']:.1f} cells/job); "
              f"{a.workers} workers {warm['wall_s']:.0f} s ({warm['cells_per_job']:.1f} cells/job): "
              f"x{res['wall_ratio']:.2f} the wall time")
        return res
    n, jobs = a.cells, a.jobs or a.cells

    work = Path(tempfile.mkdtemp(prefix=f"prunegen-scale-{n}-"))
    study_file = work / "scale.yaml"
    study_file.write_text(yaml.safe_dump(study(n)))
    bindir, calls_log = work / "shim-bin", work / "slurm-calls.log"
    make_shim(bindir, calls_log)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    base = [sys.executable, "-m", "snakemake", "--profile", str(PROFILE), "--snakefile", str(REPO / "Snakefile"),
            "-d", str(work), "--jobs", str(jobs), "--prunegen-workers", str(a.workers), "merge", "--config", f"study={study_file}",
            f"results_root={work}/results"]
    if a.poll_s is not None:
        base[3:3] = ["--seconds-between-status-checks", str(a.poll_s)]

    dry = run_measured(base + ["-n", "--quiet"], env, work / "dry.log", 3600)
    if dry["rc"] != 0:
        raise SystemExit(f"dry run failed:\n{(work / 'dry.log').read_text()[-3000:]}")
    print(f"scale: {n} cells, --jobs {jobs}, in {work}; dry run {dry['wall_s']:.1f} s, "
          f"{dry['cpu_s']:.1f} s CPU, {dry['max_rss_mib']:.0f} MiB", flush=True)
    got = run_measured(base, env, work / "run.log", a.timeout_s)
    out = (work / "run.log").read_text()
    if got["rc"] != 0:
        raise SystemExit(f"run failed (rc {got['rc']}):\n{out[-5000:]}")

    calls = [l.split("\t") for l in calls_log.read_text().splitlines()]
    count = {name: sum(1 for c in calls if c[1] == name) for name in SHIMMED}
    count["scontrol show partition"] = sum(1 for c in calls if c[1] == "scontrol" and c[3].startswith("show partition"))
    cells_done = sum(1 for _ in (work / "results" / "scale" / "cells").glob("**/cell.json"))
    slurm_side = sacct_span(work)
    m = re.search(r"prunegen executor: (\d+) job\(s\) in (\d+) sbatch call\(s\); (\d+) status poll\(s\) using (\{.*?\})", out)
    n_jobs = slurm_side["jobs"] or n + 1
    res = {
        "cells": n, "snakemake_jobs_option": jobs, "cells_complete": cells_done, "slurm_jobs": slurm_side["jobs"],
        "workers": a.workers,
        # every SLURM job that ran, but merge, ran cells (cell jobs, or worker jobs; worker jobs
        # still pending when the cells were done were cancelled, never started)
        "cells_per_job": cells_done / max(1, slurm_side["jobs"] - slurm_side["states"].get("CANCELLED", 0) - 1),
        "worker_report": (w.group(0) if (w := re.search(r"\d+ cell\(s\) in \d+ worker job\(s\) that ran \([^)]*\)", out))
                          else None),
        "slurm_job_states": slurm_side["states"],
        "sbatch_calls": count["sbatch"], "status_calls": {k: count[k] for k in ("sacct", "squeue")} | {
            "scontrol (status)": count["scontrol"] - count["scontrol show partition"]},
        "scontrol_show_partition_calls": count["scontrol show partition"], "scancel_calls": count["scancel"],
        "executor_report": m.group(0) if m else None,
        "wall_s": got["wall_s"], "slurm_submit_to_last_end_s": slurm_side["submit_to_last_end_s"],
        "job_runtime_mean_s": slurm_side["job_runtime_mean_s"],
        "jobs_per_min": n_jobs / got["wall_s"] * 60,
        "snakemake_cpu_s": got["cpu_s"], "dry_run_cpu_s": dry["cpu_s"],
        "executor_cpu_ms_per_job": 1000 * (got["cpu_s"] - dry["cpu_s"]) / n_jobs,
        "snakemake_peak_rss_mib": got["max_rss_mib"], "dry_run_peak_rss_mib": dry["max_rss_mib"],
        "node_cpus": os.cpu_count(),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"scale-{n}{'-workers' if a.workers else ''}.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return res


if __name__ == "__main__":
    main()
