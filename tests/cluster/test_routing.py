"""Where a job goes and whether it goes again: partition routing from a partition-limits
file in the official SLURM plugin's format (issue 30 item 3), and the cause of a cell's
failure (item 1, in part). On the real test cluster: tests/slurm/test_workers.py."""

from pathlib import Path

import pytest

from prunegen.cluster import joblog
from prunegen.cluster.slurm import partitions, retry
from prunegen.cluster.slurm.request import Request, SlurmError

FILE = """\
partitions:
  gpu-a100:
    max_runtime: "2-00:00:00"
    max_gpu: 4
    available_gpu_models: [a100]
    max_mem_mb: 512000
    max_threads: 64
  gpu-v100:
    max_runtime: 720
    max_gpu: 8
    available_gpu_models: [v100]
  cpu:
    max_runtime: "1-00:00:00"
    max_threads: 128
    max_mem_mb: 256000
    cluster: main
"""


@pytest.fixture
def parts(tmp_path):
    path = tmp_path / "partitions.yaml"
    path.write_text(FILE)
    return partitions.read(path)


def test_the_plugins_format_is_read_with_slurm_time_spellings(parts):
    by = {p.name: p for p in parts}
    assert by["gpu-a100"].limits.max_runtime == 2880 and by["gpu-v100"].limits.max_runtime == 720
    assert by["gpu-a100"].limits.available_gpu_models == ("a100",) and by["cpu"].cluster == "main"
    assert by["cpu"].limits.max_gpu == 0


def test_cells_go_to_a_gpu_partition_that_fits_and_merge_to_the_cpu_one(parts):
    cell = Request(cpus=1, mem_mb=6000, runtime_min=60, gpus=1)
    assert partitions.best(parts, cell) == "gpu-a100"  # tighter fit than v100's 8 GPUs (1/4 > 1/8)
    assert partitions.best(parts, Request(cpus=1, mem_mb=6000, runtime_min=60, gpus=1, gpu_model="v100")) == "gpu-v100"
    merge = Request(cpus=1, mem_mb=4000, runtime_min=60, gpus=0)
    assert partitions.best(parts, merge) == "cpu"  # not a GPU queue, though both GPU partitions would take it
    # a CPU job that no CPU partition holds may still run where GPUs are
    assert partitions.best(parts, Request(cpus=1, mem_mb=300000, runtime_min=60, gpus=0)) == "gpu-a100"


def test_a_job_no_partition_holds_keeps_the_default(parts):
    assert partitions.best(parts, Request(cpus=1, mem_mb=1000, runtime_min=60, gpus=16)) is None
    assert partitions.best(parts, Request(cpus=1, mem_mb=1000, runtime_min=60, gpus=1, gpu_model="h100")) is None
    assert partitions.best(parts, Request(cpus=1, mem_mb=1000, runtime_min=5000, gpus=1)) is None


def test_a_bad_file_is_one_error_naming_the_file_and_key(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("partitions:\n  gpu:\n    max_gpus: 4\n")
    with pytest.raises(SlurmError, match=r"p\.yaml: partition 'gpu': unknown key\(s\) max_gpus"):
        partitions.read(path)
    path.write_text("gpu: {max_gpu: 4}\n")
    with pytest.raises(SlurmError, match="needs a 'partitions:' mapping"):
        partitions.read(path)


def test_a_cells_own_error_is_told_from_a_device_error_and_a_lost_worker():
    """Issue 30 item 1 (in part): what the executor retries. Outcomes as workers write them."""
    from prunegen.cluster.slurm.workers import cause

    assert cause({"rc": 2, "error": "prunegen: error: dataset 'x' not found under data/"}) == "cell"
    assert cause({"rc": 1, "error": "ZeroDivisionError: division by zero"}) == "cell"
    assert cause({"rc": 1, "error": "RuntimeError: CUDA error: an illegal memory access was encountered"}) == "device"
    assert cause({"rc": 1, "error": "its worker job 7_1 ended NODE_FAIL while running it", "workers_lost": 3}) == "worker"


def test_a_cell_whose_worker_ran_out_of_memory_is_queued_again_with_more_up_to_a_ceiling(tmp_path):
    """Issue 30 item 1 (in part): OUT_OF_MEMORY, as sacct says it of a worker job, moves the
    cell it held to workers asking 1.5 times the memory; past the ceiling the cell fails,
    saying why. (A real OOM kill on the test cluster needs memory enforcement there.)"""
    from prunegen.cluster.queue import Queue
    from prunegen.cluster.slurm.workers import Pools, WorkerJob

    pools = Pools(tmp_path, max_workers=4, mem_ceiling_mb=3000)
    pool, tid = pools.put(Request(cpus=1, mem_mb=1000, runtime_min=10), {"argv": ["run-cell"], "label": "c"})
    mems = []
    for n in range(3):
        job = f"5{n}_0"
        task = pool.queue.claim(f"slurm-{job}")
        pools.started(pool, [WorkerJob(job)])
        back, failed = pools.ended(job, "OUT_OF_MEMORY", success=False)
        mems.append(pool.request.mem_mb)
        if failed:
            break
        moved = pool.queue.result(task["id"])["moved_to"]
        assert "again with" in back[0]["why"] and moved["task"] in Queue(moved["queue"]).todo()
        pool = next(p for p in pools.pools.values() if str(p.queue.root) == moved["queue"])
    assert mems == [1000, 1500, 2250] and pool.request.mem_mb == 2250
    assert failed and "2250 MB times the retry factor would pass the ceiling" in failed[0]["why"]
    assert pool.queue.result(task["id"])["rc"] == 1


# ---------------------------------------------------------------- retry by cause (item 1, 2)


def _log(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_failure_is_read_for_its_cause(tmp_path):
    started = _log(tmp_path, "out", "[prunegen.slurm] cell: SLURM job 7 (restart 0) on n1\n")
    never = _log(tmp_path, "never", "")
    # slurmstepd's OverMemoryKill: the job ends FAILED, not OUT_OF_MEMORY
    oom = _log(tmp_path, "err", "slurmstepd-n1: error: StepId=7.0 exceeded memory limit (3 > 2), being killed\n")
    assert retry.classify("FAILED", [started, oom], started_log=started) == "memory"
    assert retry.classify("OUT_OF_MEMORY", [started], started_log=started) == "memory"
    assert retry.classify("NODE_FAIL", [started], started_log=started) == "node"
    # a job that failed before its command started: the node's environment, not the cell
    assert retry.classify("FAILED", [never], started_log=never) == "node"
    cell_log = _log(tmp_path, "cell.log", "Traceback (most recent call last):\n  ...\nValueError: bad\n")
    assert retry.classify("FAILED", [started], cell_log=cell_log, started_log=started) == "cell"
    cuda = _log(tmp_path, "cuda.log", "Traceback (most recent call last):\nRuntimeError: CUDA error: an illegal memory access\n")
    assert retry.classify("FAILED", [started], cell_log=cuda, started_log=started) == "node"
    assert retry.classify("TIMEOUT", [started], started_log=started) == "other"
    assert retry.classify("FAILED", [tmp_path / "missing"], started_log=started) == "other"


def test_a_data_parallel_cell_is_judged_by_every_tasks_log(tmp_path):
    """Rank 0's traceback (the cell's log) only says it lost a peer; the cause is in the log of
    the task that met it. Every task's submitit log is read; a lost peer alone is retried."""
    folder = tmp_path / "submitit"
    folder.mkdir()
    for t in range(3):  # a 3-task job 41, and job 4 (whose name 41's must not catch)
        for ext in ("out", "err"):
            _log(folder, f"41_{t}_log.{ext}", "[prunegen.slurm] cell: SLURM job 41 (restart 0) on n1\n" if ext == "out" else "")
    _log(folder, "4_0_log.out", "")
    _log(folder, "41_2_log.err", "slurmstepd-n3: error: StepId=41.0 exceeded memory limit (9 > 8), being killed\n")
    logs = retry.task_logs(folder / "41_0_log.out", folder / "41_0_log.err")
    assert [Path(p).name for p in logs] == [f"41_{t}_log.{e}" for e in ("out", "err") for t in range(3)]
    assert retry.task_logs(folder / "4_0_log.out", None) == [str(folder / "4_0_log.out")]
    assert retry.task_logs(tmp_path / "other.log", None) == [str(tmp_path / "other.log")]  # not submitit's: itself
    lost = _log(tmp_path, "cell.log", "Traceback (most recent call last):\n  ...\nRuntimeError: [../gloo/transport/"
                "tcp/pair.cc:545] Read error [127.0.0.1]:10960: Connection reset by peer.\n")
    started = folder / "41_0_log.out"
    assert retry.classify("FAILED", logs, cell_log=lost, started_log=started) == "memory"  # task 2's
    assert retry.classify("FAILED", logs[:1], cell_log=lost, started_log=started) == "other"  # task 0's alone
    (folder / "41_2_log.err").write_text("RuntimeError: CUDA error: uncorrectable ECC error encountered\n")
    assert retry.classify("FAILED", logs, cell_log=lost, started_log=started) == "node"
    # rank 0's own error: the others lost it as a peer, and it is still the cell's
    (folder / "41_2_log.err").write_text("RuntimeError: Connection closed by peer [127.0.0.1]:1234\n")
    own = _log(tmp_path, "own.log", "Traceback (most recent call last):\nValueError: a bad value\n")
    assert retry.classify("FAILED", logs, cell_log=own, started_log=started) == "cell"


def test_node_names_are_validated_and_expanded():
    assert retry.expand_nodes("gpu[01-03,07],cpu5") == ["gpu01", "gpu02", "gpu03", "gpu07", "cpu5"]
    for bad in ("None", "None assigned", "", "(null)", "a b"):
        assert retry.expand_nodes(bad) == [], bad
    assert not retry.valid_node("None") and not retry.valid_node("") and retry.valid_node("node2")


def test_a_node_is_excluded_after_its_failures_within_the_window():
    now = [0.0]
    nodes = retry.Nodes(failures=2, window_s=100, clock=lambda: now[0])
    assert nodes.failed("n1") == [] and nodes.exclude() is None  # one failure: not yet
    now[0] = 150.0  # the first is out of the window
    assert nodes.failed("n1") == []
    now[0] = 160.0
    assert nodes.failed("n[1-2]") == ["n1"] and nodes.exclude() == "n1"
    assert nodes.failed("None") == [] and nodes.exclude() == "n1"  # never --exclude=None
    assert "n1 (after 2 node-level failure(s))" in nodes.report()


def test_the_exclude_list_reaches_sbatch_with_the_researchers_own():
    p = Request(exclude="n1,n2").submitit_parameters()
    assert p["exclude"] == "n1,n2"
    p = Request(exclude="n2", extra="--exclude=n9").submitit_parameters()
    assert p["exclude"] == "n9,n2" and "exclude" not in p.get("additional_parameters", {})
    assert "exclude" not in Request().submitit_parameters()


def test_memory_grows_by_the_factor_up_to_the_ceiling():
    assert retry.more_memory(1000, 1.5, None) == 1500
    assert retry.more_memory(3000, 1.5, 4000) is None
    assert retry.more_memory(None, 1.5, None) is None


def test_a_retried_job_carries_why_the_last_one_failed(tmp_path):
    run = tmp_path / ".snakemake" / "submitit" / "20260101T000000-abc"
    run.mkdir(parents=True)
    cell = str(tmp_path / "cell")
    joblog.append(run, [{"job_id": "7", "label": "c", "dirs": [cell]}])
    joblog.append(run, [{"job_id": "7", "label": "c", "dirs": [cell], "outcome": "failed", "cause": "memory",
                         "detail": "FAILED: out of memory at 300 MB: retried with 450 MB"}])
    assert joblog.read_jobs(tmp_path)[cell].outcome == "failed"
    joblog.append(run, [{"job_id": "8", "label": "c", "dirs": [cell]}])
    job = joblog.read_jobs(tmp_path)[cell]
    assert job.job_id == "8" and job.retried == "FAILED: out of memory at 300 MB: retried with 450 MB"
