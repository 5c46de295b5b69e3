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
- One shared watcher polls all active jobs with one ``sacct`` call (one ``squeue``
  call where accounting is disabled) per round; it never waits on a job.
- Ctrl-C cancels all active jobs with one ``scancel``.
- A job that times out or is preempted is requeued by submitit and runs the same
  command again; the cell resumes from its per-epoch checkpoint.
- A failed job is reported with the paths of its submitit logs and rule log.

The SLURM/submitit side lives in :mod:`prunegen.slurm` (no Snakemake there).
"""

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncGenerator, Dict, List, Optional

from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase


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
    max_timeouts: int = _setting(
        3, "How many times a job that reaches its time limit is requeued (preemptions are "
           "always requeued).")
    max_array_size: int = _setting(
        1000, "Largest array one sbatch submits (keep it below the cluster's MaxArraySize); "
              "more ready jobs with the same request go in several arrays.")
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


def _res(job, *names, default=None):
    """The first of ``names`` that the job's resources set (Snakemake's TBD/None skipped)."""
    for name in names:
        value = job.resources.get(name)
        if value is not None and str(value) not in ("", "None", "<TBD>"):
            return value
    return default


def _int(value, default=None):
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class Executor(RemoteExecutor):
    def __post_init__(self):
        from prunegen import slurm

        self._slurm = slurm
        self.settings: ExecutorSettings = self.workflow.executor_settings or ExecutorSettings()
        run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.workdir = Path.cwd()
        self.folder = (self.workdir / self.settings.folder / run_id).absolute()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.watcher = slurm.StatusWatcher(mode=self.settings.status_command)
        self.sbatch_calls = 0
        self.jobs_submitted = 0
        self._job_cores: Optional[int] = None
        self.logger.info(f"prunegen executor: SLURM jobs through submitit, files in {self.folder}")

    # ---------------------------------------------------------------- requests
    def request(self, job: JobExecutorInterface):
        """What SLURM is asked for on behalf of ``job`` (a rule job or a group job)."""
        s = self.settings
        members = list(job.jobs) if job.is_group() else [job]
        gpus = _int(_res(job, "gpus", "gpu", "gpus_per_node"), 0)
        if job.is_group() and s.group_gpus == "share":
            gpus = max((_int(_res(m, "gpus", "gpu", "gpus_per_node"), 0) for m in members), default=0)
        cpus = _int(_res(job, "cpus_per_task"), None) or max(1, _int(job.threads, 1))
        extra = " ".join(x for x in (s.sbatch_extra, _res(job, "slurm_extra")) if x) or None
        name = f"smk-{job.groupid if job.is_group() else job.name}"
        return self._slurm.Request(
            cpus=cpus,
            mem_mb=_int(_res(job, "mem_mb")),
            runtime_min=_int(_res(job, "runtime")),
            gpus=gpus,
            gpu_model=_res(job, "gpu_model"),
            partition=_res(job, "slurm_partition", "partition", default=s.partition),
            account=_res(job, "slurm_account", "account", default=s.account),
            constraint=_res(job, "constraint", default=s.constraint),
            qos=_res(job, "qos", default=s.qos),
            extra=extra,
            job_name=name[:64],
        )

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

    def _submit(self, jobs: List[JobExecutorInterface]):
        batches: Dict[object, List[JobExecutorInterface]] = defaultdict(list)
        for job in jobs:
            try:
                batches[self.request(job)].append(job)
            except Exception as e:  # a bad resource value: this job fails, the rest go on
                self.report_job_error(SubmittedJobInfo(job), msg=f"cannot build the SLURM request: {e}. ")
        size = max(1, int(self.settings.max_array_size))
        chunks = [(request, batch[i:i + size]) for request, batch in batches.items()
                  for i in range(0, len(batch), size)]
        for request, batch in chunks:
            try:
                shell_jobs = [self._slurm.ShellJob(self.job_command(j, request.cpus), self.workdir,
                                                   label=self._label(j)) for j in batch]
                executor = self._slurm.make_executor(
                    self.folder, request, max_num_timeout=self.settings.max_timeouts,
                    signal_delay_s=self.settings.signal_delay_s,
                    array_parallelism=self.settings.array_parallelism or len(batch))
                submitted = self._slurm.submit(executor, shell_jobs)
                self.sbatch_calls += 1
                self.jobs_submitted += len(submitted)
            except Exception as e:
                for j in batch:
                    self.report_job_error(
                        SubmittedJobInfo(j), msg=f"submission to SLURM failed: {str(e).strip()}\n")
                continue
            base = submitted[0].job_id.split("_")[0]
            self.logger.info(
                f"Submitted {len(batch)} job(s) as SLURM {'array' if len(batch) > 1 else 'job'} {base} "
                f"({request.job_name}: {request.cpus} CPU, {request.gpus} GPU, {request.mem_mb} MB, "
                f"{request.runtime_min} min, partition {request.partition or 'default'}).")
            for j, sub in zip(batch, submitted):
                self.watcher.register(sub.job_id, sub.result)
                self.report_job_submission(SubmittedJobInfo(
                    j, external_jobid=sub.job_id,
                    aux={"stdout": str(sub.stdout), "stderr": str(sub.stderr), "request": request}))

    @staticmethod
    def _label(job: JobExecutorInterface) -> str:
        if job.is_group():
            return f"group {job.groupid} ({len(list(job.jobs))} jobs)"
        wc = ",".join(f"{k}={v}" for k, v in dict(getattr(job, "wildcards", {}) or {}).items())
        return f"rule {job.name}" + (f" [{wc}]" if wc else "")

    # ---------------------------------------------------------------- status
    async def check_active_jobs(
        self, active_jobs: List[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        if not active_jobs:
            return
        before = dict(self.watcher.queries)
        async with self.status_rate_limiter:
            statuses = self.watcher.poll([j.external_jobid for j in active_jobs])
        spent = {k: v - before.get(k, 0) for k, v in self.watcher.queries.items() if v != before.get(k, 0)}
        self.logger.debug(f"prunegen status poll {self.watcher.polls}: {len(active_jobs)} active jobs, "
                          f"queries {spent}")
        for job_info in active_jobs:
            st = statuses.get(job_info.external_jobid)
            if st is None or not st.done:
                yield job_info
                continue
            self.watcher.forget(job_info.external_jobid)
            if st.outcome == "success":
                self.report_job_success(job_info)
            else:
                self.report_job_error(job_info, msg=self._failure_message(job_info, st),
                                      aux_logs=self._logs(job_info))

    def _logs(self, job_info: SubmittedJobInfo) -> List[str]:
        aux = job_info.aux or {}
        return [p for p in (aux.get("stdout"), aux.get("stderr")) if p]

    def _failure_message(self, job_info: SubmittedJobInfo, st) -> str:
        aux = job_info.aux or {}
        rule_logs = [str(f) for f in job_info.job.log] if job_info.job.log else []
        lines = [
            f"SLURM job {job_info.external_jobid} ended {st.state}"
            + (f" ({st.reason})" if st.reason else "") + f" [state from {st.source}].",
            f"submitit log: {aux.get('stdout')}",
            f"submitit err: {aux.get('stderr')}",
        ]
        if rule_logs:
            lines.append("rule log: " + ", ".join(rule_logs))
        return "\n".join(lines) + "\n"

    def shutdown(self):
        super().shutdown()
        if self.sbatch_calls:
            self.logger.info(
                f"prunegen executor: {self.jobs_submitted} job(s) in {self.sbatch_calls} sbatch call(s); "
                f"{self.watcher.polls} status poll(s) using {dict(self.watcher.queries)}; "
                f"files in {self.folder}")

    # ---------------------------------------------------------------- cancel
    def cancel_jobs(self, active_jobs: List[SubmittedJobInfo]):
        ids = [j.external_jobid for j in active_jobs if j.external_jobid]
        if ids:
            self.logger.info(f"Cancelling {len(ids)} SLURM job(s): scancel {' '.join(ids)}")
            self._slurm.cancel(ids)
