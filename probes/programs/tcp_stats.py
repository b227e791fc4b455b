"""Loads bpf/tcp_stats.c (part of probe `tcp`): failed connects, retransmits and resets.

One event per connection that had a problem, when it closes, through the program's own ring
buffer (never woken per event: drained on the worker's timer); exact totals in `counters`.

RTT is not collected (schema.FLOW_RTT_US stays None): the only stable source, tcp:tcp_probe,
fires for every segment received on every connection, so it would put a BPF run (~100 ns) and
a map update on the hot receive path of all traffic to learn one number per connection.
"""

import ctypes
import logging
from collections.abc import Callable

from probes.programs.program import Program
from probes.programs.socket_trace import Addr
from probes.scope import CgroupScope

log = logging.getLogger(__name__)
RINGBUF_PAGES = 64  # 256 KiB: ~3,000 health events between two polls before loss
FAIL_NONE, FAIL_REFUSED, FAIL_TIMEOUT = 0, 1, 2
FAILURES = {FAIL_NONE: None, FAIL_REFUSED: "refused", FAIL_TIMEOUT: "timeout"}


class HealthEvent(ctypes.Structure):  # struct health_event in bpf/tcp_stats.c
    _fields_ = [
        ("ts", ctypes.c_uint64),
        ("tgid", ctypes.c_uint32),
        ("retransmits", ctypes.c_uint32),
        ("resets_sent", ctypes.c_uint32),
        ("resets_received", ctypes.c_uint32),
        ("failure", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 7),
        ("laddr", Addr),
        ("raddr", Addr),
    ]


class TcpStats(Program):
    source = "tcp_stats.c"
    counter_names = (
        "tcp_connects",
        "tcp_refused",
        "tcp_timeouts",
        "tcp_retransmits",
        "tcp_resets_sent",
        "tcp_resets_received",
        "tcp_closes",
        "tcp_health_events",
        "tcp_health_events_lost",
    )

    def __init__(self, on_health: Callable[[HealthEvent], None], scope: CgroupScope | None = None):
        super().__init__()
        self.on_health = on_health
        self.scope = scope
        self.malformed_events = 0
        self.callback_errors = 0

    def placeholders(self) -> dict[str, str]:
        return super().placeholders() | {
            "__RINGBUF_PAGES__": str(RINGBUF_PAGES),
            "__CGROUP_ID__": str(self.scope.cgroup_id if self.scope else 0),
            "__CGROUP_LEVEL__": str(self.scope.level if self.scope else 0),
        }

    def loaded_hook(self) -> None:
        self.bpf["events"].open_ring_buffer(self._on_event)

    def reattach_hook(self) -> None:
        self.bpf["sockets"].clear()  # sockets freed while detached may have been reused since

    def poll(self) -> None:
        if self.bpf is not None:
            self.bpf.ring_buffer_consume()

    def _on_event(self, _ctx, data, size) -> None:
        # An exception here would only be printed by ctypes and the event silently lost.
        if size < ctypes.sizeof(HealthEvent):
            self.malformed_events += 1
            return
        try:
            self.on_health(HealthEvent.from_buffer_copy(ctypes.string_at(data, ctypes.sizeof(HealthEvent))))
        except Exception:
            self.callback_errors += 1
            if self.callback_errors == 1 or self.callback_errors % 10_000 == 0:
                log.exception("TCP health event %d could not be turned into a record", self.callback_errors)
