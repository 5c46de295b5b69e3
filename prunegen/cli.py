"""`prunegen` command line: one subcommand per stage, each importing only its own.

    run-cell                 the engine (torch)
    merge, figures, results  the analysis (no torch)
    status, plan             the study and its records (`--watch`, `--calibrate`: the cluster side)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

QUEUE_ENV = "PRUNEGEN_WARM"  # prunegen.cluster.queue.ENV: set, run-cell sends its cell to warm processes


def _study_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--study", required=True, help="study YAML file")
    p.add_argument("--results-root", help="override the study's results_root")
    p.add_argument("--data-root", help="override the study's data_root")
    p.add_argument("--set", dest="set_text", metavar="TERMS", help='overrides of the study file, as key.path=value '
                   'terms (values in YAML): "benchmarks.mnist-lenet300.train.epochs=40 seeds=[0,1]" (as snakemake '
                   '--config set=...); validated like the file')


def _select_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--select", metavar="TERMS", help='a slice of the study, e.g. "benchmark=digits-mlp '
                   'noise=0,0.1": the matching cells and the cells they read (as --config select=...)')


def _load(args):
    from .study.load import load_study  # every command reads its study

    overrides = {k: v for k, v in {"results_root": args.results_root, "data_root": args.data_root}.items() if v}
    return load_study(args.study, overrides, args.set_text)


def cmd_run_cell(args) -> None:
    # each command imports its own stage only: the engine (torch, seconds) for run-cell alone
    from .cluster import stage
    from .engine import allocator, ranks, stopping
    from .engine.data import check_present, dataset_files
    from .engine.gpu_sampler import gpu_sampler
    from .engine.run import resolve_device, run_cell
    from .records import layout, store

    if args.on_cell is None:  # a process of its own (a warm worker sets both up once)
        allocator.keep_freed_memory()  # this process runs one cell: prunegen/allocator.py
        stopping.install()  # SIGTERM, SIGUSR2: checkpoint at the next step and stop
    rank = ranks.join()  # one process, or a rank of a data-parallel cell (prunegen.engine.ranks)
    if rank.main and rank.world > 1:
        rank.tell(args.argv)  # the cell, to the other ranks (`prunegen rank`)
    study = _load(args)
    bm, node_dir = study.benchmarks.get(args.benchmark), stage.stage_dir()
    files = dataset_files(bm.dataset, study.data_root, bm.source) if bm is not None and node_dir else []
    if files:  # read this node's copy (PRUNEGEN_STAGE_DIR: prunegen.cluster.stage)
        study = dataclasses.replace(study, data_root=stage.stage(files, study.data_root, node_dir))
    cell = study.cell(args.benchmark, args.arm, args.level, args.noise, args.seed)
    world = cell.benchmark.resources.world
    if rank.world == 1 and world > 1:  # this process starts the cell's ranks and waits for them
        from .cluster.launch import launch_local  # the cluster side (submitit), for such a cell only

        check_present(cell.benchmark.dataset, study.data_root, cell.benchmark.source)  # one error, not `world`

        rc = launch_local(args.argv, world, cell.benchmark.resources.gpus,
                          study.root / "logs" / "ranks" / cell.relpath, stopping.requested)
        if rc:
            raise SystemExit(rc)
        print(cell.dir)
        return
    if rank.world != world:
        raise ranks.RanksError(f"{cell.label}: its benchmark asks for {world} rank(s) (resources.nodes x "
                               f"resources.tasks) but this process group has {rank.world}")
    if args.on_cell is None:  # its cost is the job's (Snakemake's benchmark file), not a warm process's
        layout.warm_json(study.root, cell.relpath).unlink(missing_ok=True)
    # GPU samples only for a cell that trains (a complete one is skipped and keeps its own)
    device = None if store.is_complete(cell.dir, cell.hash) else resolve_device(args.device or study.device)
    with gpu_sampler(layout.gpu_json(study.root, cell.relpath), device):
        path = run_cell(study, args.benchmark, args.arm, args.level, args.noise, args.seed, device=args.device)
    if args.on_cell is not None:
        args.on_cell(study, cell)
    print(path)


def cmd_rank(args) -> None:
    # a rank other than 0 of a data-parallel cell: rank 0 says which cell (prunegen.cluster.ranks)
    from .engine import ranks, stopping

    stopping.install()
    rc = main(ranks.join().tell(None))
    if rc:
        raise SystemExit(rc)


def cmd_worker(args) -> None:
    from .cluster import worker  # the warm process: it runs the engine, cell after cell

    raise SystemExit(worker.serve(args, run=main))


def cmd_merge(args) -> None:
    from .analysis.merge import merge  # the analysis: no torch

    for name, path in merge(_load(args)).items():
        print(f"{name}\t{path}")


def cmd_figures(args) -> None:
    from .analysis.figures.draw import draw  # the analysis: no torch

    for path in draw(_load(args)):
        print(path)


def cmd_results(args) -> None:
    from .analysis.report.build import build  # the analysis: no torch

    if args.beside and not args.beside_study:
        from .study.grid import StudyError  # the one-line error every command reports

        raise StudyError("--beside needs --beside-study: the file of the study whose tables those are")
    beside = (args.beside_study, args.beside, args.beside_label or str(args.beside_study)) if args.beside else None
    for path in build(_load(args), args.out, args.study, refresh=not args.from_page_tables, since=args.since,
                      since_label=args.since_label, beside=beside):
        print(path)


def cmd_status(args) -> None:
    # the records and the analysis' scan: no torch (the engine's torch version is read from a file)
    from .analysis.scan import format_status, scan, status
    from .records import provenance
    from .study.selection import cells

    study = _load(args)
    if args.watch:
        from .cluster import watch  # the cluster side: SLURM's watcher

        watch.watch(study, cells(study, args.select), workdir=Path(args.workdir), interval_s=args.interval,
                    patience_s=args.patience, poll=watch.slurm_poll())
        return
    grid = scan(study, cells(study, args.select), verify=args.verify)
    if args.engine is not None:  # the folders of one engine's complete cells, one per line
        chosen = grid[grid["engine"].fillna("").str.startswith(args.engine) & (grid["state"] == "complete")]
        print("".join(f"{d}\n" for d in chosen["dir"]), end="")
        return
    current = provenance.current(provenance.installed_torch_version())
    print(format_status(status(study, grid), current_engine=current), end="")


def cmd_plan(args) -> None:
    from .cluster.plan import format_plan, plan  # the cluster side: no torch, unless calibrating

    study = _load(args)
    if args.calibrate:
        from .cluster.calibrate import calibrate  # times the engine: torch

        calibrate(study, steps=args.calibrate_steps, device=args.device)
    p = plan(study, args.select, args.partition_limit)
    print(json.dumps(p, indent=2) if args.json else format_plan(p), end="\n" if args.json else "")


def main(argv: list[str] | None = None, on_cell=None) -> int:
    """`on_cell(study, cell)`: called after a run-cell in this process (a warm worker's hook)."""
    parser = argparse.ArgumentParser(prog="prunegen", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run-cell", help="train one (benchmark, arm, level, noise, seed) cell and write its records")
    _study_arg(p)
    p.add_argument("--benchmark", required=True)
    p.add_argument("--arm", required=True)
    p.add_argument("--level", required=True, type=int)
    p.add_argument("--noise", required=True, type=float)
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--device", help="override the study's device (cpu, cuda, auto)")
    p.set_defaults(func=cmd_run_cell)

    for name, func, text in (
            ("merge", cmd_merge, "merge every complete cell of the study into results/<study>/tables (Parquet + CSV)"),
            ("figures", cmd_figures, "draw the study's figures into results/<study>/figures (PNG + PDF)"),
            ("status", cmd_status, "count complete / stale / corrupt / missing cells per benchmark and arm "
                                   "(writes nothing)")):
        p = sub.add_parser(name, help=text)
        _study_arg(p)
        p.set_defaults(func=func)
        if name == "status":
            p.add_argument("--verify", action="store_true",
                           help="checksum every record file (default: compare sizes and mtimes with cell.json and "
                                "checksum only a file whose mtime changed, as the workflow does)")
            p.add_argument("--engine", metavar="ENGINE", help="print the folders of the complete cells that "
                           "this engine computed (as status names it: its source digest, or 'not recorded'), "
                           "one per line, instead of the counts")
            p.add_argument("--watch", action="store_true",
                           help="join the grid with the study's SLURM jobs (queued, pending with SLURM's reason, "
                                "running with the epoch reached, completed, failed with the log) and refresh "
                                "until nothing is left")
            p.add_argument("--interval", type=float, default=5.0, metavar="S",
                           help="--watch: seconds between refreshes (default: %(default)s)")
            p.add_argument("--patience", type=float, default=60.0, metavar="S",
                           help="--watch: stop after this long with nothing pending or running (default: %(default)s)")
            p.add_argument("--workdir", default=".", help="--watch: Snakemake's working directory, whose "
                           ".snakemake/submitit holds the runs' job lists (default: the current one)")
    _select_arg(p)  # status

    p = sub.add_parser("rank", help="a rank other than 0 of a data-parallel cell: joins the process group "
                                    "torch's env:// variables name and runs the cell rank 0 names (started by "
                                    "prunegen.cluster.ranks)")
    p.set_defaults(func=cmd_rank)

    p = sub.add_parser("worker", help="a warm process: run cell after cell from a queue folder (started by "
                                      "a local run's pool or a SLURM worker job; prunegen.cluster.worker)")
    p.add_argument("--queue", required=True, help="the queue folder")
    p.add_argument("--name", help="this worker's name in the queue (default: its SLURM job, or host-pid)")
    p.add_argument("--idle-s", type=float, default=120.0, help="exit after this long without a cell")
    p.add_argument("--parent", type=int, help="exit when this process (the local run) is gone")
    p.add_argument("--slots", type=int, default=1, help="cells at once, sharing this job's GPU (one process each)")
    p.add_argument("--mps", choices=("auto", "on", "off"), default="auto",
                   help="--slots > 1: start CUDA MPS for them where the job has a GPU and the node has MPS")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("plan", help="cells, jobs, cycles, epochs, device-hours and the longest job per "
                                    "benchmark and arm, before submitting (writes nothing, but --calibrate)")
    _study_arg(p)
    _select_arg(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--partition-limit", metavar="TIME", help="flag jobs whose estimate or requested time "
                   "exceeds this SLURM time limit (minutes, H:M:S or D-H:M:S)")
    p.add_argument("--calibrate", action="store_true", help="first time a few hundred training steps of each "
                   "benchmark on this device, into results/<study>/calibration.json")
    p.add_argument("--calibrate-steps", type=int, default=200, help="steps timed per benchmark (default: %(default)s)")
    p.add_argument("--device", help="--calibrate: override the study's device (cpu, cuda, auto)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("results", help="write the results page (claim by claim) and its figures from the "
                                       "study's merged tables")
    _study_arg(p)
    p.add_argument("--out", default="docs/results.md", help="the page; its tables and figures go beside it, "
                   "under results/<study>/ (default: %(default)s)")
    p.add_argument("--from-page-tables", action="store_true",
                   help="render from the table copies already beside the page (no results/ needed)")
    p.add_argument("--since", type=Path, help="an earlier page's verdicts.parquet: the page gets a \"What "
                   "changed\" section, verdict by verdict (the records are kept beside the page)")
    p.add_argument("--since-label", help="how the page names that earlier judgement (default: its path)")
    p.add_argument("--beside", type=Path, metavar="TABLES", help="another study's page tables (the folder beside "
                   "its page): a \"Two regimes\" section sets it beside this study, judged by the same rules "
                   "(needs --beside-study)")
    p.add_argument("--beside-study", type=Path, metavar="FILE", help="--beside: that study's file")
    p.add_argument("--beside-label", help="--beside: how the page names that study (default: its file)")
    p.set_defaults(func=cmd_results)

    args = parser.parse_args(argv)
    args.on_cell = on_cell
    args.argv = list(sys.argv[1:] if argv is None else argv)
    warm = os.environ.get(QUEUE_ENV)
    if args.command == "run-cell" and warm and on_cell is None:
        # a warm process runs the cell (prunegen.cluster.worker); this one only waits: no torch here
        from .cluster.queue import run_through

        return run_through(warm, list(sys.argv[1:] if argv is None else argv),
                           threads=int(os.environ.get("OMP_NUM_THREADS") or 1))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    # The errors a command reports in one line; imported per command, since the engine's
    # modules import torch (seconds) and merge, figures and results need none of it.
    # (imported here, per command: see the comment above)
    from .engine.stopping import StopRequested  # (signal only: no torch)
    from .records.store import CorruptRecordError
    from .study.grid import StudyError

    expected: tuple[type[Exception], ...] = (StudyError, CorruptRecordError)
    if args.command == "run-cell":
        # the engine's errors, for run-cell only (the engine imports torch)
        from .engine.checkpoints import CheckpointError
        from .engine.data import DatasetError
        from .engine.parents import MissingParentError
        from .engine.ranks import RanksError
        from .records.lock import CellLockedError

        expected += (DatasetError, MissingParentError, CheckpointError, CellLockedError, RanksError)
    elif args.command == "results":
        from .analysis.report.tables import TablesError  # the analysis', for results only

        expected += (TablesError,)
    try:
        args.func(args)
    except expected as e:
        print(f"prunegen: error: {e}", file=sys.stderr)
        return 2
    except StopRequested as e:
        print(f"prunegen: {e}", file=sys.stderr)
        return 128 + e.signum  # as a process the signal ended, after saving its checkpoint
    return 0


if __name__ == "__main__":
    sys.exit(main())
