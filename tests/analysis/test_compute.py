"""The compute table's readers: Snakemake's benchmark files, GPU samples; off CUDA the
sampler does nothing."""

import pytest

from prunegen.analysis import compute
from prunegen.engine import gpu_sampler


def test_a_benchmark_file_is_read_and_a_corrupt_one_is_named(tmp_path):
    tsv = tmp_path / "cell.tsv"
    tsv.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                   "12.5\t0:00:12\t300.1\t900.2\t250.0\t260.0\t1.0\t2.0\t95.0\t11.75\n")
    row = compute.read_tsv(tsv)
    assert row["job_seconds"] == 12.5 and row["cpu_seconds"] == 11.75 and row["max_rss_mb"] == 300.1
    assert compute.read_tsv(tmp_path / "absent.tsv") == {}
    tsv.write_text("s\tcpu_time\n")  # header only: a job killed before Snakemake wrote its row
    with pytest.raises(ValueError, match="cell.tsv"):
        compute.read_tsv(tsv)


def test_the_gpu_sampler_is_a_no_op_off_cuda(tmp_path):
    import torch

    path = tmp_path / "cell.gpu.json"
    with gpu_sampler.gpu_sampler(path, torch.device("cpu")):
        pass
    with gpu_sampler.gpu_sampler(path, None):
        pass
    assert not path.exists()
