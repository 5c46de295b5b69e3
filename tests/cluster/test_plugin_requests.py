"""What the executor plugin asks of SLURM for a Snakemake job
(snakemake_executor_plugin_prunegen.requests), on jobs shaped like Snakemake's, no cluster."""

from dataclasses import dataclass, field

from snakemake_executor_plugin_prunegen import ExecutorSettings, requests


@dataclass
class Job:
    """What the helpers read of Snakemake's JobExecutorInterface."""

    name: str = "cell"
    resources: dict = field(default_factory=dict)
    threads: int = 1
    wildcards: dict = field(default_factory=dict)
    output: list = field(default_factory=list)
    jobs: list = field(default_factory=list)
    groupid: str | None = None

    def is_group(self) -> bool:
        return self.groupid is not None


def test_rule_resources_become_the_request_and_settings_fill_the_rest():
    settings = ExecutorSettings(partition="gpu", account="lab", sbatch_extra="--exclusive")
    job = Job(resources={"mem_mb": 3000, "runtime": 45, "gpus": 1, "gpu_model": "a100", "constraint": "ib",
                         "slurm_extra": "--mail-type=FAIL", "mem": "<TBD>"}, threads=4)
    r = requests.request(job, settings, "smk-abc", lambda partition: None)
    assert (r.cpus, r.mem_mb, r.runtime_min, r.gpus, r.gpu_model) == (4, 3000, 45, 1, "a100")
    assert (r.partition, r.account, r.constraint, r.job_name) == ("gpu", "lab", "ib", "smk-abc")
    assert r.extra == "--exclusive --mail-type=FAIL"
    # a rule's own partition wins; cpus_per_task wins over threads; a runtime above MaxTime is capped
    job = Job(resources={"slurm_partition": "short", "cpus_per_task": 2, "runtime": 500}, threads=8)
    r = requests.request(job, settings, "smk-abc", lambda partition: {"short": 60}.get(partition))
    assert (r.partition, r.cpus, r.runtime_min, r.gpus) == ("short", 2, 60, 0)


def test_a_group_shares_the_gpus_its_members_need_unless_told_to_sum():
    members = [Job(resources={"gpus": 1}), Job(resources={"gpus": 1})]
    group = Job(name="group", resources={"gpus": 2}, jobs=members, groupid="pack")
    assert requests.request(group, ExecutorSettings(), "j", lambda p: None).gpus == 1
    assert requests.request(group, ExecutorSettings(group_gpus="sum"), "j", lambda p: None).gpus == 2
    # nodes and tasks are a cell's, not summed: packed one-rank cells are one task on one node
    members = [Job(resources={"nodes": 1, "tasks": 1}), Job(resources={"nodes": 1, "tasks": 1})]
    group = Job(name="group", resources={"nodes": 2, "tasks": 2}, jobs=members, groupid="pack")
    r = requests.request(group, ExecutorSettings(), "j", lambda p: None)
    assert (r.nodes, r.tasks, requests.ranks(group)) == (1, 1, 1)


def test_comment_label_and_progress_folders():
    a = Job(wildcards={"benchmark": "digits-mlp", "arm": "imp", "level": "2"}, output=["/r/c/a/cell.json"])
    b = Job(wildcards={"benchmark": "digits-mlp", "arm": "imp", "level": "3"}, output=["/r/c/b/cell.json"])
    assert requests.comment([a]) == "cell:benchmark=digits-mlp,arm=imp,level=2"
    assert requests.comment([a, b]) == "cell[2]:benchmark=digits-mlp,arm=imp,level=2|3"
    assert requests.label(a) == "rule cell [benchmark=digits-mlp,arm=imp,level=2]"
    assert requests.progress_dirs(a) == ["/r/c/a"]
    group = Job(name="group", jobs=[a, b], groupid="pack")
    assert requests.comment([group]) == "group-pack[1]:cell"
    assert requests.label(group) == "group pack (2 jobs)" and requests.progress_dirs(group) == ["/r/c/a", "/r/c/b"]
    assert requests.runtime_asked([Job(resources={"runtime": 30}), b]) == 30


def test_a_job_asks_at_least_the_memory_its_own_python_and_snakemake_hold():
    """A job runs submitit's Python and Snakemake (~200 MB) before its rule's command: less than
    the floor (Snakemake's own test workflows ask 5 MB) is raised to it; unset stays unset."""
    settings = ExecutorSettings()
    assert requests.request(Job(resources={"mem_mb": 5}), settings, "j", lambda p: None).mem_mb == 256
    assert requests.request(Job(resources={"mem_mb": 3000}), settings, "j", lambda p: None).mem_mb == 3000
    assert requests.request(Job(), settings, "j", lambda p: None).mem_mb is None
    assert requests.request(Job(resources={"mem_mb": 5}), ExecutorSettings(min_mem_mb=0), "j",
                            lambda p: None).mem_mb == 5
