"""Snakemake executor plugin ``prunegen``: every job goes to SLURM through submitit.

    snakemake --profile profiles/slurm            # profiles/slurm/config.yaml says executor: prunegen
    snakemake --executor prunegen --prunegen-partition gpu --jobs 100

Snakemake finds this package by its name (``snakemake_executor_plugin_<name>``)
on ``sys.path``; ``pip install -e .`` from the repository root installs it.

- Jobs that are ready together are submitted together: one submitit batch, i.e.
  one ``sbatch --array``, per distinct resource request (not one sbatch per job).
- Rule resources reach SLURM: threads (or ``cpus_per_task``) -> ``--cpus-per-task``,
  ``gpus`` (and ``gpu_model``) -> ``--gpus-per-node``, ``mem_mb`` -> ``--mem``,
  ``runtime`` (minutes) -> ``--time``, ``slurm_partition``, ``slurm_account``,
  ``constraint``, ``qos``, ``slurm_extra`` (further sbatch flags); the
  ``--prunegen-*`` settings give the defaults.
- Jobs are named ``smk-<run id>`` (one name per Snakemake run: ``scancel --name``
  of it cancels that run only); ``--comment`` holds the rule and the cell wildcards.
- sbatch rejections that can pass are retried with backoff (fewer jobs at a time for
  a submit limit; waiting for a controller that is down).
- One shared watcher polls all active jobs with one ``sacct`` call (one ``squeue``
  call while sacct fails) per round; it never waits on a job. The interval grows
  1.5x per poll that sees no change, up to ``--prunegen-poll-ceiling-s``.
- Ctrl-C cancels all active jobs with one ``scancel``.
- A job that SLURM requeues (preemption, node failure) stays active: no Snakemake
  retry; the cell resumes from its per-epoch checkpoint. A job that times out is
  requeued by submitit while its cell makes progress; a request above the
  partition's MaxTime is submitted at MaxTime.
- A job pending for a reason that cannot clear (PartitionConfig, InvalidQOS, ...)
  is cancelled and reported failed, naming the reason and the cell.
- A failed job is reported with the paths of its submitit logs and rule log.

The SLURM/submitit side lives in :mod:`prunegen.cluster.slurm` (no Snakemake there); what
a job asks of SLURM, in :mod:`snakemake_executor_plugin_prunegen.requests` (pure functions).
"""

import dataclasses
import math
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncGenerator, Dict, List, Optional

from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import (
    CommonSettings,
    ExecutorSettingsBase,
)

from prunegen.cluster import dag, joblog
from prunegen.cluster import queue as slurm_queue
from prunegen.cluster.slurm import cleanup as slurm_cleanup
from prunegen.cluster.stage import ENV as slurm_stage_env
from prunegen.cluster.slurm import partitions as slurm_partitions
from prunegen.cluster.slurm import request as slurm_request
from prunegen.cluster.slurm import retry as slurm_retry
from prunegen.cluster.slurm import status as slurm_status
from prunegen.cluster.slurm import submit as slurm_submit
from prunegen.cluster.slurm import workers as slurm_workers
from prunegen.cluster.slurm.job import ShellJob

from . import requests


def _setting(default, help: str, **extra):
    return field(default=default, metadata={"help": help, "env_var": False, "required": False, **extra})


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    partition: Optional[str] = _setting(
        None, "SLURM partition for jobs whose rule sets no slurm_partition resource.")
    account: Optional[str] = _setting(
        None, "SLURM account (--account) for jobs whose rule sets no slurm_account resource.")
    constraint: Optional[str] = _setting(
        None, "SLURM --constraint (e.g. a GPU type feature such as 'a100') unless a rule sets one.")
    qos: Optional[str] = _setting(None, "SLURM --qos unless a rule sets one.")
    sbatch_extra: Optional[str] = _setting(
        None, "Further sbatch flags for every job, e.g. '--exclusive --mail-type=FAIL'; "
              "a rule's slurm_extra resource is added to them.")
    folder: str = _setting(
        ".snakemake/submitit",
        "Folder (relative to the working directory) for submitit's files: one subfolder per "
        "Snakemake run, holding each job's submission pickle, stdout/stderr logs and result.")
    status_command: str = _setting(
        "auto", "How job states are read: 'auto' (sacct, or squeue/scontrol when sacct fails, "
                "e.g. with accounting disabled), 'sacct' or 'squeue'.",
        choices=["auto", "sacct", "squeue"])
    group_gpus: str = _setting(
        "share", "GPUs of a group job (packed cells): 'share' asks for the most any member "
                 "needs (the members share the GPU), 'sum' for the sum Snakemake computes.",
        choices=["share", "sum"])
    signal_delay_s: int = _setting(
        90, "Seconds before the time limit at which SLURM signals a job (USR2) so that it is "
            "checkpointed and requeued.")
    max_timeouts: Optional[int] = _setting(
        None, "At most this many requeues after time-outs per job. Default: no fixed cap; "
              "a job is requeued after a time-out as long as the run that timed out made "
              "progress (its cell wrote a new epoch checkpoint). Preemptions are always requeued.")
    requeue_grace_s: int = _setting(
        600, "A job that reads PREEMPTED or NODE_FAIL stays active (SLURM requeues it) for this "
             "long; only one still in that state afterwards is reported failed.")
    unschedulable_confirm_s: int = _setting(
        15, "A job pending for a reason that cannot clear (PartitionConfig, InvalidQOS, ...) on "
            "polls this many seconds apart is cancelled and reported failed.")
    poll_ceiling_s: int = _setting(
        60, "Status polls start every --seconds-between-status-checks and wait 1.5 times longer "
            "after each poll that sees no change, up to this many seconds.")
    submit_retry_s: int = _setting(
        600, "For this many seconds in all, sbatch rejections that can pass (a submit limit, a "
             "controller that is down) are retried with backoff before the jobs fail.")
    max_array_size: int = _setting(
        1000, "Largest array one sbatch submits (keep it below the cluster's MaxArraySize); "
              "more ready jobs with the same request go in several arrays.")
    partition_limits: Optional[str] = _setting(
        None, "A partition-limits file (the official SLURM plugin's format): each job whose rule "
              "names no partition goes to the partition that fits it best; jobs without GPUs to a "
              "partition without GPUs (prunegen.cluster.slurm.partitions).")
    workers: int = _setting(
        0, "Run cells in warm worker jobs: at most this many SLURM jobs at once, each running "
           "cell after cell from a queue in the run's folder (torch, data and CUDA context loaded "
           "once per job; prunegen.cluster.slurm.workers). 0: one SLURM job per cell.")
    worker_slots: int = _setting(
        1, "Cells a worker job runs at once, sharing its GPU (one process each, under CUDA MPS "
           "where the node has it): the job asks for the CPUs and memory of that many cells.")
    worker_mps: str = _setting(
        "auto", "CUDA MPS for a worker's slots: 'auto' (where the job has a GPU and the node "
                "has nvidia-cuda-mps-control), 'on' (fail without it), 'off'.",
        choices=["auto", "on", "off"])
    min_mem_mb: int = _setting(
        256, "The least memory (MB) a job asks for: a job's own Python (submitit) and Snakemake hold "
             "~200 MB before its rule's command starts, so a smaller mem_mb (Snakemake's own test "
             "workflows ask 5 MB) is killed on a cluster that enforces memory.")
    oom_factor: float = _setting(
        1.5, "A job killed for memory (OUT_OF_MEMORY, or SLURM's 'exceeded memory limit' in its "
             "log) is retried asking this many times its memory; a cell of a worker job is queued "
             "again for workers asking that (prunegen.cluster.slurm.retry).")
    mem_ceiling_mb: Optional[int] = _setting(
        None, "The most memory such retries may ask for (default: 4 times the job's own request).")
    node_failures: int = _setting(
        2, "A node where this many jobs failed for node-level reasons (NODE_FAIL, BOOT_FAIL, a "
           "CUDA/NCCL error, a job that failed before its command started) within "
           "--prunegen-node-window-s is excluded (sbatch --exclude) from every later job of the run.")
    node_window_s: int = _setting(
        3600, "The window, in seconds, in which --prunegen-node-failures node-level failures "
              "exclude a node.")
    keep_files_days: float = _setting(
        0, "What belongs to jobs and cells that succeeded (submitit's pickles and logs, the "
           "cells' logs, worker queues' outcomes) is removed when the run ends (0), or kept this "
           "many days and removed by the first run that starts after that; the cells' logs are "
           "packed into one done-<run>.tar.gz per run. A failure's files are always kept "
           "(prunegen.cluster.slurm.cleanup).")
    stage_dir: Optional[str] = _setting(
        None, "Node-local storage to stage each cell's dataset to, once per node (e.g. "
              "'$SLURM_TMPDIR' or '/tmp', expanded on the node): cells there read the copy, not "
              "data_root on the shared file system (prunegen.cluster.stage). Default: no staging.")
    worker_idle_s: int = _setting(
        60, "A worker job exits after this many seconds without a cell to run.")
    worker_runtime: Optional[int] = _setting(
        None, "Time limit of a worker job in minutes (at least its cells' runtime; capped at the "
              "partition's MaxTime). At the limit it checkpoints its cell, which another worker resumes.")
    array_parallelism: Optional[int] = _setting(
        None, "At most this many tasks of one array run at once (sbatch --array=...%%N); "
              "default: no limit beyond the --jobs limit.")


common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    pass_envvar_declarations_to_cmd=True,
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=1,
)


class Executor(RemoteExecutor):
    def __post_init__(self):
        self.settings: ExecutorSettings = self.workflow.executor_settings or ExecutorSettings()
        self.run_id = uuid.uuid4().hex[:6]
        self.job_name = f"smk-{self.run_id}"  # every job of this run: `scancel --name=smk-<id>`
        self.workdir = Path.cwd()
        self.folder = (self.workdir / self.settings.folder
                       / (time.strftime("%Y%m%dT%H%M%S") + "-" + self.run_id)).absolute()
        self.folder.mkdir(parents=True, exist_ok=True)
        s = self.settings
        self.watcher = slurm_status.StatusWatcher(mode=s.status_command, requeue_grace_s=s.requeue_grace_s,
                                           unschedulable_confirm_s=s.unschedulable_confirm_s)
        base = self.workflow.remote_execution_settings.seconds_between_status_checks
        self.schedule = slurm_status.PollSchedule(base_s=base, ceiling_s=max(base, s.poll_ceiling_s))
        self._last_states: Dict[str, str] = {}
        self._last_reasons: Dict[str, str] = {}  # job id -> its pending reason, as last logged
        self._max_minutes: Dict[Optional[str], Optional[int]] = {}  # partition -> MaxTime
        self.sbatch_calls = 0
        self.jobs_submitted = 0
        self._job_cores: Optional[int] = None
        self.pools = slurm_workers.Pools(self.folder, max(0, int(s.workers or 0)), idle_s=s.worker_idle_s,
                                         runtime_min=s.worker_runtime, slots=s.worker_slots, mps=s.worker_mps,
                                         oom_factor=s.oom_factor, mem_ceiling_mb=s.mem_ceiling_mb)
        self._claims_logged: set = set()
        self._queues: Dict[str, object] = {}
        self.partitions = slurm_partitions.read(s.partition_limits) if s.partition_limits else None
        self._worker_states: Dict[str, str] = {}  # worker job -> its state at the last poll
        self.nodes = slurm_retry.Nodes(failures=s.node_failures, window_s=s.node_window_s)
        self._memory: Dict[str, int] = {}  # job label -> memory of its next try (it ran out)
        self._first_memory: Dict[str, int] = {}  # job label -> its own request (the ceiling's base)
        self._node_retries: Dict[str, int] = defaultdict(int)  # job label -> retries on other nodes
        self._succeeded = {"jobs": [], "logs": [], "tasks": []}  # what this run may clean (cleanup.py)
        removed = slurm_cleanup.sweep(self.folder.parent, s.keep_files_days, current=self.folder)
        if removed:
            self.logger.info(f"prunegen executor: removed earlier runs' files of jobs and cells that succeeded "
                             f"(kept {s.keep_files_days:g} days): {removed}")
        self.logger.info(f"prunegen executor: run {self.run_id}: SLURM jobs named {self.job_name} "
                         f"(cancel this run's jobs: scancel --name={self.job_name}), files in {self.folder}")

    # ---------------------------------------------------------------- requests
    def request(self, job: JobExecutorInterface):
        """What SLURM is asked for on behalf of ``job`` (a rule job or a group job): a job that
        ran out of memory asks what its retry was given."""
        request = requests.request(job, self.settings, self.job_name, self.max_minutes,
                                   route=self._route if self.partitions else None)
        grown = self._memory.get(requests.label(job))
        return dataclasses.replace(request, mem_mb=grown) if grown else request

    def _staging(self, command: str) -> str:
        """`command`, told where to stage datasets on its node (expanded there: $SLURM_TMPDIR)."""
        where = self.settings.stage_dir
        if not where:
            return command
        where = where.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")  # $ expands on the node
        return f'export {slurm_stage_env}="{where}"; {command}'

    def _excluding(self, request):
        """``request`` leaving out the nodes excluded so far (applied as a job is sent, so a
        cell's worker pool does not change with the list)."""
        exclude = self.nodes.exclude()
        return dataclasses.replace(request, exclude=exclude) if exclude else request

    def _route(self, request) -> Optional[str]:
        return slurm_partitions.best(self.partitions, request)

    def max_minutes(self, partition: Optional[str]) -> Optional[int]:
        """The partition's MaxTime (one ``scontrol show partition`` per partition and run)."""
        if partition not in self._max_minutes:
            self._max_minutes[partition] = slurm_request.partition_max_minutes(partition)
        return self._max_minutes[partition]

    @property
    def cores(self):
        # the job's Snakemake runs as many of its (group's) jobs at once as it has CPUs
        if self._job_cores is not None:
            return self._job_cores
        return super().cores

    def job_command(self, job: JobExecutorInterface, cpus: int) -> str:
        self._job_cores = cpus
        try:
            return self.format_job_exec(job)
        finally:
            self._job_cores = None

    # ---------------------------------------------------------------- submission
    def run_job(self, job: JobExecutorInterface):
        self._submit([job])

    def run_jobs(self, jobs: List[JobExecutorInterface]):
        """Everything that is ready now: one submitit batch (one sbatch) per request."""
        for job in jobs:
            self.run_job_pre(job)
        self._submit(jobs)

    def _warm(self, job: JobExecutorInterface) -> bool:
        """A cell job that a worker job runs (rather than a SLURM job of its own). A
        data-parallel cell (several ranks) always gets a multi-task job of its own."""
        return (self.pools.max_workers > 0 and not job.is_group() and job.rule.name == "cell"
                and requests.ranks(job) == 1)

    def _submit(self, jobs: List[JobExecutorInterface]):
        warm = [j for j in jobs if self._warm(j)]
        if warm:
            self._queue_cells(warm)
            jobs = [j for j in jobs if not self._warm(j)]
        if jobs and not warm:
            self._release_idle_workers()
        batches: Dict[object, List[JobExecutorInterface]] = defaultdict(list)
        for job in jobs:
            try:
                batches[self.request(job)].append(job)
            except Exception as e:  # a bad resource value: this job fails, the rest go on
                self.report_job_error(SubmittedJobInfo(job), msg=f"cannot build the SLURM request: {e}. ")
        size = max(1, int(self.settings.max_array_size))
        chunks = [(request, batch[i:i + size]) for request, batch in batches.items()
                  for i in range(0, len(batch), size)]
        s = self.settings
        for request, batch in chunks:
            request = self._excluding(dataclasses.replace(request, comment=requests.comment(batch)))
            try:
                shell_jobs = [ShellJob(self._staging(self.job_command(j, request.cpus)), self.workdir,
                                       label=requests.label(j),
                                       progress_dirs=requests.progress_dirs(j), time_limit_min=request.runtime_min)
                              for j in batch]
                executor = slurm_submit.make_executor(
                    self.folder, request,
                    max_num_timeout=s.max_timeouts if s.max_timeouts is not None else 1_000_000,
                    signal_delay_s=s.signal_delay_s,
                    array_parallelism=s.array_parallelism or len(batch))
            except Exception as e:
                for j in batch:
                    self.report_job_error(SubmittedJobInfo(j), msg=f"submission to SLURM failed: {str(e).strip()}\n")
                continue
            got = slurm_submit.submit_with_backoff(executor, shell_jobs, budget_s=s.submit_retry_s)
            self.sbatch_calls += got.sbatch_calls
            self.jobs_submitted += len(got.submitted)
            by_shell = {id(sj): j for sj, j in zip(shell_jobs, batch)}
            for sj, why in got.failed:
                self.report_job_error(SubmittedJobInfo(by_shell[id(sj)]),
                                      msg=f"submission to SLURM failed: {why.strip()}\n")
            if not got.submitted:
                continue
            self.schedule.changed()
            self.next_seconds_between_status_checks = self.schedule.interval_s
            bases = sorted({sub.job_id.split("_")[0] for _, sub in got.submitted}, key=int)
            self.logger.info(
                f"Submitted {len(got.submitted)} job(s) as SLURM "
                f"{'array' if len(got.submitted) > 1 else 'job'} {','.join(bases)} "
                f"({request.job_name} {request.comment}: {request.cpus} CPU, {request.gpus} GPU, "
                f"{request.mem_mb} MB, {request.runtime_min} min, partition {request.partition or 'default'}"
                + (f", excluding {request.exclude}" if request.exclude else "") + ").")
            self._say_time_cap(batch, request)
            self._record_jobs(got.submitted)
            for sj, sub in got.submitted:
                self.watcher.register(sub.job_id, sub.result)
                self.report_job_submission(SubmittedJobInfo(
                    by_shell[id(sj)], external_jobid=sub.job_id,
                    aux={"stdout": str(sub.stdout), "stderr": str(sub.stderr), "request": request,
                         "label": sj.label}))

    # ---------------------------------------------------------------- warm workers
    def _queue_cells(self, jobs: List[JobExecutorInterface]) -> None:
        """Queue each cell for the worker jobs of its request, and start workers for them."""
        config = self.workflow.config
        for job in jobs:
            try:
                request = self.request(job)
                task = {"argv": dag.cell_argv(config, job.wildcards), "threads": request.cpus,
                        "log": str((self.workdir / str(job.log[0])).absolute()) if job.log else None,
                        "label": requests.label(job), "dirs": requests.progress_dirs(job),
                        "benchmark": str((self.workdir / str(job.benchmark)).absolute()) if job.benchmark else None}
                pool, tid = self.pools.put(request, task)
            except Exception as e:  # a bad resource value: this cell fails, the rest go on
                self.report_job_error(SubmittedJobInfo(job), msg=f"cannot queue the cell: {e}. ")
                continue
            self.report_job_submission(SubmittedJobInfo(
                job, external_jobid=f"queued:{tid}",
                aux={"task": tid, "queue": str(pool.queue.root), "label": task["label"], "dirs": task["dirs"]}))
        self._start_workers()

    def _start_workers(self) -> None:
        s = self.settings
        for pool, n in self.pools.to_start():
            request = self.pools.worker_request(pool)
            if self.partitions and self.pools.slots > 1:  # a worker with slots asks more than its cells
                request = dataclasses.replace(request, partition=self._route(request) or request.partition)
            request = self._excluding(dataclasses.replace(request, runtime_min=self._capped(request)))
            shell_jobs = [ShellJob(self._staging(self.pools.command(pool)), self.workdir, label="prunegen worker",
                                   time_limit_min=request.runtime_min) for _ in range(n)]
            try:
                executor = slurm_submit.make_executor(self.folder, request, max_num_timeout=1_000_000,
                                                      signal_delay_s=s.signal_delay_s, array_parallelism=n)
            except Exception as e:
                self.logger.error(f"prunegen executor: cannot start worker jobs: {e}")
                continue
            got = slurm_submit.submit_with_backoff(executor, shell_jobs, budget_s=s.submit_retry_s)
            self.sbatch_calls += got.sbatch_calls
            for _, why in got.failed[:1]:
                self.logger.error(f"prunegen executor: sbatch refused {len(got.failed)} worker job(s): {why.strip()}")
            jobs = [slurm_workers.WorkerJob(sub.job_id, str(sub.stdout), str(sub.stderr))
                    for _, sub in got.submitted]
            self.pools.started(pool, jobs)
            for sj, sub in got.submitted:
                self.watcher.register(sub.job_id, sub.result)
            if jobs:
                self._record_jobs(got.submitted)
                self.logger.info(f"Started {len(jobs)} worker job(s) ({', '.join(j.job_id for j in jobs)}) for "
                                 f"{len(pool.queue.todo())} queued cell(s): {request.cpus} CPU, {request.gpus} GPU, "
                                 f"{request.mem_mb} MB, {request.runtime_min} min, partition "
                                 f"{request.partition or 'default'}.")

    def _release_idle_workers(self) -> None:
        """Other jobs go out (merge waits for every cell) and no cell is queued or running:
        workers stop at once, and those still pending are cancelled, instead of holding
        the CPUs and GPUs those jobs need for --prunegen-worker-idle-s."""
        if not self.pools.pools or any(p.queue.todo() or p.queue.claims() for p in self.pools.pools.values()):
            return
        cancelled = self._stop_workers()
        if cancelled:
            self.logger.info(f"prunegen executor: no cell left to run: cancelled {cancelled} pending worker job(s)")

    def _stop_workers(self) -> int:
        """Running workers exit after their cell (the queues' stop file); pending ones, which
        would find nothing to do, are cancelled. Returns how many were."""
        self.pools.stop()
        pending = [w for w in self.pools.worker_ids() if self._worker_states.get(w, "PENDING") == "PENDING"]
        if pending:
            slurm_submit.cancel(pending)
            self._succeeded["jobs"] += pending  # never ran, not failed: nothing to diagnose
        return len(pending)

    def _queue(self, path: str):
        """The queue at `path`, made once (a poll reads every active cell's outcome)."""
        if path not in self._queues:
            self._queues[path] = slurm_queue.Queue(path)
        return self._queues[path]

    def _capped(self, request) -> Optional[int]:
        cap = self.max_minutes(request.partition)
        return min(request.runtime_min, cap) if cap and request.runtime_min else request.runtime_min

    def _check_cells(self, infos: List[SubmittedJobInfo], statuses) -> List[SubmittedJobInfo]:
        """Report the queued cells that are done; return those still active."""
        for wid in self.pools.worker_ids():  # worker jobs that are over: their cells back, or failed
            st = statuses.get(wid)
            if st is not None:
                self._worker_states[wid] = st.state
            if st is not None and st.done:
                self.watcher.forget(wid)
                state = st.state
                if st.outcome != "success":
                    found = self.pools.worker(wid)
                    logs = [found[1].stdout, found[1].stderr] if found else []
                    cause = slurm_retry.classify(state, logs, started_log=logs[0] if logs else None)
                    if cause == "memory":
                        state = "OUT_OF_MEMORY"  # the held cells move to workers with more memory
                    elif cause == "node":
                        self._node_failed(wid, st, "worker job")
                        state = "NODE_FAIL"  # not the cells' fault: they go back to the queue
                back, failed = self.pools.ended(wid, state, st.outcome == "success")
                for t in back:
                    self.logger.info(f"prunegen executor: {t.get('label')} back in the queue: {t['why']}")
                joblog.append(self.folder, [{"job_id": wid, "label": t.get("label", ""), "dirs": t.get("dirs", []),
                                             "outcome": "queued", "detail": t["why"]} for t in back])
        claimed = {}
        for pool in self.pools.pools.values():
            for worker, ids in pool.queue.claims().items():
                for tid in ids:
                    claimed[tid] = (pool, slurm_workers.job_of(worker))
        active = []
        for info in infos:
            aux = info.aux or {}
            result = self._queue(aux["queue"]).result(aux["task"])
            while result is not None and result.get("moved_to"):  # queued again elsewhere (more memory)
                aux.update(result["moved_to"])
                result = self._queue(aux["queue"]).result(aux["task"])
            tid = aux["task"]
            if tid in claimed and (tid, claimed[tid][1]) not in self._claims_logged:
                self._claims_logged.add((tid, claimed[tid][1]))
                worker = claimed[tid][0].workers.get(claimed[tid][1])
                joblog.append(self.folder, [{"job_id": claimed[tid][1], "label": aux.get("label", ""),
                                             "dirs": aux.get("dirs", []), "stdout": worker.stdout if worker else "",
                                             "stderr": worker.stderr if worker else ""}])
            if result is None:
                active.append(info)
            elif int(result.get("rc", 1)) == 0:
                self.pools.cells_done += 1
                self._succeeded["tasks"].append(str(Path(aux["queue"]) / "done" / f"{aux['task']}.json"))
                self._succeeded["logs"] += self._cell_logs(info.job)
                self.report_job_success(info)
            else:
                worker = slurm_workers.job_of(str(result.get("worker", "")))
                joblog.append(self.folder, [{"job_id": worker, "label": aux.get("label", ""),
                                             "dirs": aux.get("dirs", []), "outcome": "failed",
                                             "detail": f"exit {result.get('rc')}: {result.get('error')}"}])
                why = slurm_workers.cause(result)
                if why == "cell":  # it would fail the same way again: Snakemake does not retry it
                    info.job.attempt = max(info.job.attempt, info.job.restart_times + 1)
                self.report_job_error(info, msg=(
                    f"{aux.get('label')} failed in worker job {worker} "
                    f"(exit {result.get('rc')}): {result.get('error')}"
                    + (" [an error of the cell's own code or data: not retried]" if why == "cell" else "")
                    + "\nrule log: " + ", ".join(str(f) for f in (info.job.log or [])) + "\n"))
        self._start_workers()
        return active

    def _record_jobs(self, submitted) -> None:
        """Append the batch to the run's ``jobs.jsonl`` (prunegen.cluster.joblog)."""
        joblog.append(self.folder, [{"job_id": sub.job_id, "label": sj.label, "dirs": sj.progress_dirs,
                                           "stdout": str(sub.stdout), "stderr": str(sub.stderr)}
                                          for sj, sub in submitted])

    def _say_time_cap(self, batch: List[JobExecutorInterface], request) -> None:
        """A request above the partition's MaxTime went in at MaxTime: say so, and how many
        requeues the cell is expected to need (its runtime over the cap, rounded up, less one)."""
        asked = requests.runtime_asked(batch)
        cap = request.runtime_min
        if not cap or asked <= cap:
            return
        requeues = math.ceil(asked / cap) - 1
        self.logger.info(
            f"  {request.comment} asks {asked} min, more than partition {request.partition or 'default'}'s "
            f"MaxTime of {cap} min: submitted at {cap} min; expected requeues after time-outs: {requeues} "
            f"(each resumes from the cell's checkpoint; requeued for as long as each run makes progress).")

    # ---------------------------------------------------------------- status
    async def check_active_jobs(
        self, active_jobs: List[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        if not active_jobs:
            return
        cells = [j for j in active_jobs if (j.aux or {}).get("task")]
        active_jobs = [j for j in active_jobs if not (j.aux or {}).get("task")]
        before = dict(self.watcher.queries)
        async with self.status_rate_limiter:
            statuses = self.watcher.poll([j.external_jobid for j in active_jobs] + self.pools.worker_ids())
        for info in self._check_cells(cells, statuses):
            yield info
        spent = {k: v - before.get(k, 0) for k, v in self.watcher.queries.items() if v != before.get(k, 0)}
        # the next poll: sooner after a change, later while nothing changes
        states = {j: st.state for j, st in statuses.items()}
        changed = any(self._last_states.get(j) != v for j, v in states.items()) or \
            any(j not in states for j in self._last_states)
        self._last_states = states
        self.next_seconds_between_status_checks = (self.schedule.changed() if changed or cells
                                                   else self.schedule.unchanged())
        self.logger.debug(f"prunegen status poll {self.watcher.polls}: {len(active_jobs)} active jobs, "
                          f"queries {spent}; next poll in {self.next_seconds_between_status_checks:.0f} s")
        self._log_pending_reasons(active_jobs, statuses)
        stuck = [jid for jid, st in statuses.items() if st.cancel]
        if stuck:  # would wait forever: take them out of the queue before reporting them
            slurm_submit.cancel(stuck)
        for job_info in active_jobs:
            st = statuses.get(job_info.external_jobid)
            if st is None or not st.done:
                yield job_info
                continue
            self.watcher.forget(job_info.external_jobid)
            self._last_states.pop(job_info.external_jobid, None)
            self._last_reasons.pop(job_info.external_jobid, None)
            if st.outcome == "success":
                self._succeeded["jobs"].append(job_info.external_jobid)
                self._succeeded["logs"] += self._cell_logs(job_info.job)
                self.report_job_success(job_info)
            else:
                why = self._retry_by_cause(job_info, st)
                self.report_job_error(job_info, msg=self._failure_message(job_info, st) + why,
                                      aux_logs=self._logs(job_info))

    def _retry_by_cause(self, job_info: SubmittedJobInfo, st) -> str:
        """Read why a job failed and set up its retry (prunegen.cluster.slurm.retry): more
        memory after an out-of-memory kill; another node after a node-level failure (the node
        excluded after --prunegen-node-failures); none after the cell's own error. A retry
        for memory or a node does not use up one of Snakemake's --retries (the job was not at
        fault); each is bounded (the memory ceiling; one per excluded node). Returns the line
        that says so, also logged to the run's jobs.jsonl."""
        aux, job = job_info.aux or {}, job_info.job
        label = aux.get("label") or requests.label(job)
        cell_log = str(job.log[0]) if not job.is_group() and job.log else None
        cause = slurm_retry.classify(st.state, self._logs(job_info), cell_log=cell_log, started_log=aux.get("stdout"))
        request = aux.get("request")
        if cause == "memory":
            mem = request.mem_mb if request else None
            first = self._first_memory.setdefault(label, mem or 0)
            grown = slurm_retry.more_memory(mem, self.settings.oom_factor,
                                            self.settings.mem_ceiling_mb or (4 * first if first else None))
            if grown:
                self._memory[label] = grown
                job.attempt = max(1, job.attempt - 1)  # not the job's fault: a retry of its own
                why = f"out of memory at {mem} MB: retried with {grown} MB"
            else:
                job.attempt = max(job.attempt, job.restart_times + 1)
                why = (f"out of memory at {mem} MB: {self.settings.oom_factor}x would pass the ceiling "
                       "(--prunegen-mem-ceiling-mb): not retried")
        elif cause == "node":
            excluded = self._node_failed(job_info.external_jobid, st, label)
            self._node_retries[label] += 1
            if self._node_retries[label] <= max(1, len(self.nodes.excluded)):
                job.attempt = max(1, job.attempt - 1)
            why = (f"a node-level failure on {st.nodes or 'an unknown node'}: retried"
                   + (f" without {', '.join(excluded)}" if excluded else "")
                   + (f" (excluding {self.nodes.exclude()})" if self.nodes.exclude() else ""))
        elif cause == "cell":
            job.attempt = max(job.attempt, job.restart_times + 1)
            why = f"an error of the cell's own code or data (see {cell_log}): not retried"
        else:
            why = "retried as Snakemake's --retries allow" if job.attempt <= job.restart_times else "no retries left"
        joblog.append(self.folder, [{"job_id": job_info.external_jobid, "label": label, "dirs": aux.get("dirs", []),
                                     "outcome": "failed", "cause": cause, "detail": f"{st.state}: {why}"}])
        self.logger.info(f"prunegen executor: {label} (SLURM job {job_info.external_jobid}, {st.state}): {why}")
        return f"cause: {cause}: {why}\n"

    @staticmethod
    def _cell_logs(job: JobExecutorInterface) -> List[str]:
        """The rule logs of a job's cells (a group job's members' too): packed once they succeeded."""
        members = list(job.jobs) if job.is_group() else [job]
        return [str(Path(f).absolute()) for m in members if m.rule.name == "cell" for f in (m.log or [])]

    def _clean_up(self) -> None:
        """The run is over: list what succeeded (cleanup.json) and, keeping 0 days, remove it
        now. Worker jobs told to stop are given a few seconds to end, so that theirs go too."""
        workers = [w.job_id for w in self.pools.all_jobs if Path(w.stdout).exists()]  # those that ran
        deadline = time.monotonic() + (0 if self.settings.keep_files_days else 10)
        while time.monotonic() < deadline and not all(slurm_cleanup.succeeded(self.folder, w) for w in workers):
            time.sleep(0.5)
        jobs = self._succeeded["jobs"] + [w for w in workers if slurm_cleanup.succeeded(self.folder, w)]
        slurm_cleanup.write_list(self.folder, jobs, self._succeeded["logs"], self._succeeded["tasks"])
        if not self.settings.keep_files_days:
            removed = slurm_cleanup.clean(self.folder)
            self.logger.info(f"prunegen executor: removed the files of jobs and cells that succeeded: {removed} "
                             f"(a failure's files are kept; --prunegen-keep-files-days keeps them all for a while)")

    def _node_failed(self, job_id: str, st, what: str) -> List[str]:
        """Count a node-level failure on the job's nodes; say which nodes are now excluded."""
        excluded = self.nodes.failed(st.nodes)
        if excluded:
            self.logger.warning(f"prunegen executor: excluding node(s) {', '.join(excluded)} from this run's "
                                f"jobs after {self.settings.node_failures} node-level failure(s) (last: "
                                f"{what}, SLURM job {job_id}, {st.state}); --exclude={self.nodes.exclude()}")
        return excluded

    def _log_pending_reasons(self, active_jobs: List[SubmittedJobInfo], statuses) -> None:
        """One line per poll in which a pending job's reason changed (or a job began to pend),
        by reason: what SLURM said is then in the log of a run that fails or hangs."""
        changed: Dict[str, List[str]] = defaultdict(list)
        for job_info in active_jobs:
            jid = job_info.external_jobid
            st = statuses.get(jid)
            reason = (st.reason or "no reason given") if st is not None and st.state == "PENDING" else None
            if reason == self._last_reasons.get(jid):
                continue
            if reason is None:
                self._last_reasons.pop(jid, None)
                continue
            self._last_reasons[jid] = reason
            label = (job_info.aux or {}).get("label") or ""
            changed[f"{reason} [state from {st.source}, reason from {st.reason_source or st.source}]"].append(f"{jid} ({label})" if label else jid)
        for reason, jobs in sorted(changed.items()):
            shown = ", ".join(jobs[:5]) + (f" and {len(jobs) - 5} more" if len(jobs) > 5 else "")
            self.logger.info(f"prunegen executor: pending, reason {reason}: SLURM job(s) {shown}")

    def _logs(self, job_info: SubmittedJobInfo) -> List[str]:
        aux = job_info.aux or {}
        return slurm_retry.task_logs(aux.get("stdout"), aux.get("stderr"))  # (every task's, for a data-parallel cell)

    def _failure_message(self, job_info: SubmittedJobInfo, st) -> str:
        aux = job_info.aux or {}
        rule_logs = [str(f) for f in job_info.job.log] if job_info.job.log else []
        if st.cancel:
            head = (f"SLURM job {job_info.external_jobid} ({aux.get('label') or requests.label(job_info.job)}) "
                    f"cannot start: {st.reason}. Cancelled it [state from {st.source}"
                    + (f", reason from {st.reason_source}" if st.reason_source else "") + "].")
        else:
            head = (f"SLURM job {job_info.external_jobid} ended {st.state}"
                    + (f" ({st.reason})" if st.reason else "") + f" [state from {st.source}].")
        lines = [
            head,
            f"submitit log: {aux.get('stdout')}",
            f"submitit err: {aux.get('stderr')}",
        ]
        if rule_logs:
            lines.append("rule log: " + ", ".join(rule_logs))
        return "\n".join(lines) + "\n"

    def shutdown(self):
        super().shutdown()
        if self.nodes.seen:
            self.logger.info(f"prunegen executor: {self.nodes.report()}")
        if self.pools.pools:
            self._stop_workers()  # now, not after --prunegen-worker-idle-s
            self.logger.info(f"prunegen executor: {self.pools.summary()}")
        try:
            self._clean_up()
        except OSError as e:  # never fail a finished run over its housekeeping
            self.logger.warning(f"prunegen executor: cleaning up {self.folder} failed: {e}")
        if self.sbatch_calls:
            self.logger.info(
                f"prunegen executor: {self.jobs_submitted} job(s) in {self.sbatch_calls} sbatch call(s); "
                f"{self.watcher.polls} status poll(s) using {dict(self.watcher.queries)}; "
                f"files in {self.folder}")

    # ---------------------------------------------------------------- cancel
    def cancel_jobs(self, active_jobs: List[SubmittedJobInfo]):
        self.pools.stop()
        for j in active_jobs:
            if (j.aux or {}).get("task"):
                self._queue(j.aux["queue"]).withdraw(j.aux["task"])
        ids = [j.external_jobid for j in active_jobs if j.external_jobid and not (j.aux or {}).get("task")]
        # and every job not yet seen to end: Snakemake's list of active jobs is empty while a
        # status poll runs (it takes them out and puts back those still active), so a Ctrl-C
        # landing in a poll would otherwise cancel nothing and leave the whole run queued
        ids += [j for j in self.watcher.tracked() if j not in ids]
        ids += [w for w in self.pools.worker_ids() if w not in ids]
        if ids:
            self.logger.info(f"Cancelling {len(ids)} SLURM job(s): scancel {' '.join(ids)}")
            slurm_submit.cancel(ids)
