"""Where a job goes and whether it goes again: partition routing from a partition-limits
file in the official SLURM plugin's format (issue 30 item 3), and the cause of a cell's
failure (item 1, in part). On the real test cluster: tests/slurm/test_workers.py."""

import pytest

from prunegen.cluster.slurm import partitions
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
