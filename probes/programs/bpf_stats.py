"""Kernel run-time statistics of BPF programs (run_time_ns, run_cnt in /proc/<pid>/fdinfo).

The kernel only keeps them while someone holds a BPF_ENABLE_STATS file descriptor (or the
kernel.bpf_stats_enabled sysctl is 1). Holding the descriptor rather than flipping the sysctl
means the statistics stop when the worker does, even after kill -9. Keeping them costs two clock
reads per program run (tens of ns), the price of showing what each probe costs.
"""

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

BPF_SYSCALL = {"x86_64": 321, "aarch64": 280}
BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0
ATTR_SIZE = 8  # union bpf_attr's enable_stats member: one u32 (padded)


def enable_run_time_stats() -> int | None:
    """A descriptor that keeps run-time statistics on while open; None where unsupported."""
    number = BPF_SYSCALL.get(platform.machine())
    if number is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * (ATTR_SIZE // 4))(BPF_STATS_RUN_TIME)
    fd = libc.syscall(number, BPF_ENABLE_STATS, ctypes.byref(attr), ATTR_SIZE)
    if fd < 0:
        log.warning("BPF run-time statistics unavailable: %s", os.strerror(ctypes.get_errno()))
        return None
    return fd
