"""NVML samples of the GPU while a cell job runs: device memory used at most, mean and
peak utilization, and torch's own peak, written beside the job's benchmark file
(prunegen.records.layout.gpu_json) for the compute table. NVML comes from the optional
`nvidia-ml-py` package (`pip install -e .[gpu]`); without it, or off CUDA, nothing is
sampled.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

import numpy as np
import torch

from ..records.store import write_json

log = logging.getLogger("prunegen")


def _nvml():
    try:
        import pynvml  # nvidia-ml-py: optional (the [gpu] extra)
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        log.info("NVML unavailable (%s): no GPU samples", e)
        return None
    return pynvml


def _handle(nvml, device):
    """The NVML handle of torch's device (by UUID: CUDA_VISIBLE_DEVICES renumbers devices)."""
    try:
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    except Exception:  # noqa: BLE001 - an older driver or torch: fall back to the index
        return nvml.nvmlDeviceGetHandleByIndex(device.index or 0)


@contextlib.contextmanager
def gpu_sampler(path: Path, device, interval: float = 1.0):
    """Sample the GPU's memory use and utilization every `interval` seconds while the
    block runs, then write the figures to `path` (atomically). A no-op off CUDA or
    without NVML."""
    nvml = _nvml() if getattr(device, "type", None) == "cuda" else None
    if nvml is None:
        yield
        return
    handle = _handle(nvml, device)
    mem, util, stop = [], [], threading.Event()

    def sample() -> None:
        while True:
            mem.append(nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20)
            util.append(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=sample, name="gpu-sampler", daemon=True)
    torch.cuda.reset_peak_memory_stats(device)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        name = nvml.nvmlDeviceGetName(handle)
        write_json({
            "gpu_name": name.decode() if isinstance(name, bytes) else name,
            "gpu_mem_used_max_mb": float(np.max(mem)), "gpu_util_mean": float(np.mean(util)),
            "gpu_util_max": float(np.max(util)), "gpu_samples": len(mem), "interval_s": interval,
            "gpu_torch_peak_mb": torch.cuda.max_memory_reserved(device) / 2**20,
        }, path)
        nvml.nvmlShutdown()
