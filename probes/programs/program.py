"""What every small BPF program of the worker has in common: render, load, unload, counters, cost.

One C file per program under bpf/, its placeholders (`__SELF_TGID__`, ...) filled in by `render`;
`python -m probes --print-bpf` shows the result without loading it. The socket program keeps its
own loader (probes/programs/socket_trace.py): it joins two files and seeds state from /proc.
"""

import ctypes
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

BPF_DIR = Path(__file__).resolve().parent.parent.parent / "bpf"


def fdinfo_field(fd: int, name: str) -> int | None:
    """An integer field of /proc/self/fdinfo/<fd> (run_time_ns, run_cnt of a BPF program)."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key == name:
                    return int(value)
    except (OSError, ValueError):
        return None
    return None


class Program:
    """One bpf/<source> module. Subclasses name their source, placeholders and counters."""

    source = ""  # file name under bpf/
    counter_names: tuple[str, ...] = ()  # slots of the C `counters` per-CPU array, in order

    def __init__(self):
        self.bpf = None
        self.hooks: list[bytes] = []  # "category:event" of every tracepoint the program hooks
        self.hooks_on = False

    def placeholders(self) -> dict[str, str]:
        return {"__SELF_TGID__": str(os.getpid())}

    def render(self) -> str:
        text = (BPF_DIR / self.source).read_text()
        for name, value in self.placeholders().items():
            text = text.replace(name, value)
        return text

    @property
    def attached(self) -> bool:
        return self.bpf is not None and self.hooks_on

    def attach(self) -> None:
        """Compile and load on first use (TRACEPOINT_PROBE functions attach themselves), else
        re-attach the tracepoints of the loaded program: a runtime toggle costs milliseconds,
        not a compile. Raises on failure (BCC raises bare Exception)."""
        if self.bpf is None:
            from bcc import BPF  # Debian's python3-bpfcc, linked into the venv

            self.bpf = BPF(text=self.render(), cflags=[f"-I{BPF_DIR}", "-Wno-macro-redefined"])
            self.hooks = list(self.bpf.tracepoint_fds)
            self.loaded_hook()
            log.info("%s loaded: %s", self.source, ", ".join(h.decode() for h in self.hooks))
        elif not self.hooks_on:
            self.reattach_hook()
            for hook in self.hooks:
                category, event = hook.decode().split(":")
                self.bpf.attach_tracepoint(tp=hook, fn_name=f"tracepoint__{category}__{event}")
            log.info("%s re-attached", self.source)
        self.hooks_on = True

    def detach(self) -> None:
        """Stop the tracepoints; the program and its maps stay loaded for a quick re-attach."""
        if self.bpf is not None and self.hooks_on:
            for hook in self.hooks:
                self.bpf.detach_tracepoint(hook)
            self.hooks_on = False
            log.info("%s detached", self.source)

    def unload(self) -> None:
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None
            self.hooks_on = False

    def loaded_hook(self) -> None:
        """Called once loaded (open a ring buffer, ...)."""

    def reattach_hook(self) -> None:
        """Called before the tracepoints are attached again: forget state gone stale meanwhile."""

    def counters(self) -> dict[str, int]:
        """Exact kernel-side totals since attach, summed over CPUs (zeros while detached)."""
        if self.bpf is None:
            return dict.fromkeys(self.counter_names, 0)
        table = self.bpf["counters"]
        return {name: sum(table[ctypes.c_int(i)]) for i, name in enumerate(self.counter_names)}

    def run_time_ns(self) -> int | None:
        """Kernel time spent in this program's BPF functions since load (bpf_stats must be on)."""
        if self.bpf is None:
            return None
        times = [fdinfo_field(f.fd, "run_time_ns") for f in self.bpf.funcs.values()]
        times = [t for t in times if t is not None]
        return sum(times) if times else None

    def run_counts(self) -> dict[str, tuple[int, int]]:
        """{BPF function: (runs, ns)} since load, for measuring the per-event cost of each hook."""
        if self.bpf is None:
            return {}
        return {
            name.decode(): (fdinfo_field(f.fd, "run_cnt") or 0, fdinfo_field(f.fd, "run_time_ns") or 0)
            for name, f in self.bpf.funcs.items()
        }


def take_totals(table) -> list[tuple]:
    """Every (key, value) of a per-process totals hash, deleted in the same batch so the kernel
    starts afresh and nothing is counted twice. A program writing through a pointer it looked up
    just before the batch deleted that element loses that one update (nanoseconds of exposure)."""
    # Integer keys come back as plain ints from the batch's ctypes array, structs as structs.
    return [(getattr(key, "value", key), value) for key, value in table.items_lookup_and_delete_batch()]
