"""What each probe costs the host, and which one to switch off when the worker is over budget.

Measured per heartbeat interval: the worker's own CPU (user and system, all threads) plus the
kernel time of its BPF programs (bpf_stats, when available). The socket programs serve every
protocol and the flows, so their kernel time and the worker's user time are shared out by the
events each probe produced (exact kernel counts); a program that serves one probe only (the TLS
uprobes, sched.c for cpu, block_io.c for disk, tcp_stats.c for tcp) is that probe's alone,
keyed by the probe's name in `program_ns`. What no event explains (the idle loop, heartbeats,
reading the resource maps) stays in the total but in no probe.
"""

import time
from dataclasses import dataclass, field

NS_PER_S = 1_000_000_000
OVER_BUDGET_INTERVALS = 2  # one busy interval is a spike; two in a row is a trend


@dataclass(frozen=True)
class ProbeCost:
    events_per_s: float
    cpu_percent: float  # of one core; user space only when Costs.kernel_measured is False


@dataclass(frozen=True)
class Costs:
    cpu_percent: float  # the worker, user space plus BPF programs, of one core
    kernel_measured: bool
    probes: dict[str, ProbeCost]


@dataclass
class CostMeter:
    """Turns cumulative counters into per-interval rates; `update` once per heartbeat."""

    last: tuple | None = None
    over_budget_intervals: int = 0
    throttled: dict[str, str] = field(default_factory=dict)  # probe -> why it was switched off

    def update(
        self,
        process_cpu_ns: int,
        program_ns: dict[str, int] | None,
        events: dict[str, int],
        tls_probe: str,
        now_ns: int | None = None,
        kernel_events: dict[str, int] | None = None,
    ) -> Costs | None:
        """Costs since the previous call (None on the first): `events` is cumulative per probe
        (events user space handles), `program_ns` the cumulative kernel time of the socket
        programs ("socket") and of each probe's own programs (by probe name), `kernel_events`
        cumulative hook runs that never reach user space (context switches, block I/O), which
        count in a probe's events per second only."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        current = (now_ns, process_cpu_ns, program_ns, dict(events), dict(kernel_events or {}))
        previous, self.last = self.last, current
        if previous is None or now_ns <= previous[0]:
            return None
        wall = now_ns - previous[0]
        user = max(0, process_cpu_ns - previous[1])
        kernel = _delta(program_ns, previous[2])
        new_events = {p: max(0, n - previous[3].get(p, 0)) for p, n in events.items()}
        new_kernel_events = {p: max(0, n - previous[4].get(p, 0)) for p, n in current[4].items()}
        return _share_out(wall, user, kernel, new_events, tls_probe, new_kernel_events)

    def over_budget(self, costs: Costs, budget_percent: float | None) -> bool:
        """True once the worker has been over its budget for OVER_BUDGET_INTERVALS in a row."""
        if budget_percent is None or costs.cpu_percent <= budget_percent:
            self.over_budget_intervals = 0
            return False
        self.over_budget_intervals += 1
        return self.over_budget_intervals >= OVER_BUDGET_INTERVALS


def _delta(now: dict | None, before: dict | None) -> dict[str, int] | None:
    if now is None or before is None:
        return None
    return {key: max(0, now[key] - before.get(key, 0)) for key in now}


def _share_out(
    wall: int, user: int, kernel: dict | None, events: dict[str, int], tls_probe: str, kernel_events: dict
) -> Costs:
    total_events = sum(events.values())
    socket_events = total_events - events.get(tls_probe, 0)
    probes = {}
    for probe in events.keys() | kernel_events.keys():
        n = events.get(probe, 0)
        cpu_ns = user * n / total_events if total_events else 0.0
        if kernel is not None:
            cpu_ns += kernel.get(probe, 0)  # the probe's own programs
            if probe != tls_probe and socket_events:
                cpu_ns += kernel.get("socket", 0) * n / socket_events
        probes[probe] = ProbeCost(
            events_per_s=round((n + kernel_events.get(probe, 0)) * NS_PER_S / wall, 2),
            cpu_percent=round(100 * cpu_ns / wall, 2),
        )
    total_ns = user + (sum(kernel.values()) if kernel else 0)
    return Costs(
        cpu_percent=round(100 * total_ns / wall, 2), kernel_measured=kernel is not None, probes=probes
    )


def most_expensive(costs: Costs, candidates) -> str | None:
    """The candidate probe costing the most CPU in the interval (None when none costs any)."""
    priced = [(c.cpu_percent, probe) for probe, c in costs.probes.items() if probe in candidates]
    priced = [pair for pair in priced if pair[0] > 0]
    return max(priced)[1] if priced else None
