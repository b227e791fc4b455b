"""Loads bpf/sched.c (probe `cpu`): on-CPU time and run-queue waits per process, taken each second."""

import ctypes
import time
from dataclasses import dataclass

from probes.programs.program import Program, take_totals


class Totals(ctypes.Structure):  # struct totals in bpf/sched.c
    _fields_ = [
        ("cpu_ns", ctypes.c_uint64),
        ("runq_wait_ns", ctypes.c_uint64),
        ("runq_wait_max_ns", ctypes.c_uint64),
        ("runq_waits", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("comm", ctypes.c_char * 16),
    ]


@dataclass(frozen=True, slots=True)
class CpuUsage:
    cpu_ns: int
    runq_wait_ns: int
    runq_waits: int
    runq_wait_max_ns: int
    comm: str  # the kernel's name of the thread that ran: names a process gone before we looked


class Sched(Program):
    source = "sched.c"
    counter_names = ("switches", "cpu_totals_full")

    def reattach_hook(self) -> None:
        # Slices and wakeups recorded before the detach must not count: the kernel ignores what
        # began before this time (bpf_ktime_get_ns is CLOCK_MONOTONIC).
        self.bpf["attached_at"][ctypes.c_int(0)] = ctypes.c_uint64(
            time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        )

    def take(self) -> dict[int, CpuUsage]:
        """{tgid: what it used since the previous take}; empty while detached."""
        if self.bpf is None:
            return {}
        return {
            key: CpuUsage(
                cpu_ns=value.cpu_ns,
                runq_wait_ns=value.runq_wait_ns,
                runq_waits=value.runq_waits,
                runq_wait_max_ns=value.runq_wait_max_ns,
                comm=value.comm.decode("utf-8", "replace"),
            )
            for key, value in take_totals(self.bpf["totals"])
        }
