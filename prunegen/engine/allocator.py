"""A cell job keeps the memory it frees, instead of handing it back to the OS each step.

A CPU training step allocates its activations and frees them again by the end of the
backward pass. glibc's malloc returns the freed top of its heap to the OS once more than
twice its (adaptive) mmap threshold lies free there, so the next step faults every page
back in: for ResNet-20 at batch 128, 5,000-8,000 page faults and 8-12 ms of system time
in a 120 ms step on this project's machines. Keeping it costs the step's peak, which the
step needs anyway (PyTorch's CUDA allocator does the same on the GPU).

This is process-wide, so only `prunegen run-cell`, a process of its own, sets it; the
library never does. glibc's tunables (GLIBC_TUNABLES) would do the same from outside the
process; `mallopt` keeps it in the one command that runs cells, with no environment to pass.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
# Setting either one fixes both (glibc stops adapting them), so both are set: blocks under
# 32 MiB (glibc's largest threshold) come from the heap, which is never trimmed.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 2**31 - 1


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory in the process; False (and nothing done)
    where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    if not hasattr(libc, "gnu_get_libc_version"):  # musl has mallopt, with other meanings
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
