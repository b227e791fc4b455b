"""Loads bpf/block_io.c (probe `disk`): block I/O per submitting process, taken each second.

The submitter is known where the request is created: block:block_io_start on kernels >= 6.5,
else block:block_rq_insert (see the C file's header for why block_rq_issue is not enough).
"""

import ctypes
from dataclasses import dataclass

from probes.programs.program import Program, take_totals


class Totals(ctypes.Structure):  # struct totals in bpf/block_io.c
    _fields_ = [
        ("read_bytes", ctypes.c_uint64),
        ("write_bytes", ctypes.c_uint64),
        ("wait_ns", ctypes.c_uint64),
        ("read_ops", ctypes.c_uint32),
        ("write_ops", ctypes.c_uint32),
        ("comm", ctypes.c_char * 16),
    ]


@dataclass(frozen=True, slots=True)
class DiskUsage:
    read_bytes: int
    write_bytes: int
    read_ops: int
    write_ops: int
    wait_ns: int
    comm: str


def has_io_start() -> bool:
    from bcc import BPF

    return bool(BPF.tracepoint_exists("block", "block_io_start"))


class BlockIO(Program):
    source = "block_io.c"
    counter_names = ("disk_ios", "disk_unmatched", "disk_totals_full")

    def placeholders(self) -> dict[str, str]:
        return super().placeholders() | {"__HAVE_IO_START__": str(int(has_io_start()))}

    def reattach_hook(self) -> None:
        self.bpf["inflight"].clear()  # requests whose completion was missed while detached

    def take(self) -> dict[int, DiskUsage]:
        """{tgid: its I/O completed since the previous take}; empty while detached."""
        if self.bpf is None:
            return {}
        return {
            key: DiskUsage(
                read_bytes=value.read_bytes,
                write_bytes=value.write_bytes,
                read_ops=value.read_ops,
                write_ops=value.write_ops,
                wait_ns=value.wait_ns,
                comm=value.comm.decode("utf-8", "replace"),
            )
            for key, value in take_totals(self.bpf["totals"])
        }
