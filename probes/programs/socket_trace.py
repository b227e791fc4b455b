"""Loads bpf/socket_trace.c, drains its ring buffer and reads its exact counters.

The ctypes layouts below mirror the C structs in bpf/socket_trace.c and bpf/common.h.
"""

import ctypes
import ipaddress
import logging
import os
import re
import socket
from collections.abc import Callable

from probes.identity import (
    TCP_ESTABLISHED,
    TCP_LISTEN,
    TcpSocket,
    all_pids,
    read_tcp_sockets,
    socket_inodes_of,
)
from probes.programs.program import BPF_DIR, fdinfo_field
from probes.scope import CgroupScope

log = logging.getLogger(__name__)

SOURCES = (BPF_DIR / "socket_trace.c", BPF_DIR / "ssl_trace.c")  # one module: they share maps
# Events taken per poll before the main loop gets its turn (publish, heartbeat, control).
POLL_LIMIT_EVENTS = 5000
RINGBUF_PAGES = 4096  # 16 MiB: ~12,000 exchanges of 1,384 bytes between two polls before loss
MAX_REQ = 1024  # as in socket_trace.c
MAX_RESP = 256
EV_HTTP, EV_FLOW, EV_PROCESS = 1, 2, 3
ROLE_UNKNOWN, ROLE_SERVER, ROLE_CLIENT = 0, 1, 2
PROTO_UNKNOWN, PROTO_HTTP, PROTO_OTHER = 0, 1, 2
PROTO_POSTGRES, PROTO_MYSQL, PROTO_REDIS, PROTO_MONGODB, PROTO_KAFKA = 3, 4, 5, 6, 7
# Slots of the kernel's `switches` and `exchanges_by_probe` arrays (bpf/socket_trace.c).
SLOT_FLOWS, SLOT_TLS, SLOTS = 0, 8, 9
COUNTERS = (
    "exchanges",
    "events_lost",
    "flows",
    "flows_lost",
    "unclassified_connections",
    "unanswered_requests",
    "request_buffer_full",
)
AF_INET, AF_INET6 = 2, 10
LIBSSL = re.compile(r"/libssl\.so(\.[0-9]+)*$")
# (libssl symbol, BPF function at entry, BPF function at return) from bpf/ssl_trace.c
SSL_HOOKS = (
    ("SSL_set_fd", "ssl_set_fd_enter", None),
    ("SSL_read", "ssl_read_enter", "ssl_return"),
    ("SSL_write", "ssl_write_enter", "ssl_return"),
    ("SSL_read_ex", "ssl_read_ex_enter", "ssl_return"),
    ("SSL_write_ex", "ssl_write_ex_enter", "ssl_return"),
)


class Addr(ctypes.Structure):
    _fields_ = [("family", ctypes.c_uint16), ("port", ctypes.c_uint16), ("ip", ctypes.c_uint8 * 16)]


class HttpEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint8),
        ("role", ctypes.c_uint8),
        ("req_len", ctypes.c_uint16),
        ("resp_len", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("tls", ctypes.c_uint8),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("fd", ctypes.c_uint32),
        ("req_bytes", ctypes.c_uint32),
        ("resp_bytes", ctypes.c_uint32),
        ("req_ns", ctypes.c_uint64),
        ("resp_ns", ctypes.c_uint64),
        ("parent_ns", ctypes.c_uint64),  # client: the server request its thread served (0: none)
        ("parent_fd", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("laddr", Addr),
        ("raddr", Addr),
        ("comm", ctypes.c_char * 16),
        ("req", ctypes.c_char * MAX_REQ),
        ("resp", ctypes.c_char * MAX_RESP),
    ]

    # ctypes reads and writes c_char arrays as C strings, cut at the first NUL: binary protocols
    # (Kafka, PostgreSQL, MongoDB) start with one, so the captures go through raw memory.
    def request_capture(self) -> bytes:
        return ctypes.string_at(ctypes.addressof(self) + HttpEvent.req.offset, min(self.req_len, MAX_REQ))

    def response_capture(self) -> bytes:
        return ctypes.string_at(ctypes.addressof(self) + HttpEvent.resp.offset, min(self.resp_len, MAX_RESP))

    def set_captures(self, request: bytes, response: bytes) -> None:
        """Fill the captures as the kernel would (cut to their sizes); for tests and tools."""
        request, response = request[:MAX_REQ], response[:MAX_RESP]
        ctypes.memmove(ctypes.addressof(self) + HttpEvent.req.offset, request, len(request))
        ctypes.memmove(ctypes.addressof(self) + HttpEvent.resp.offset, response, len(response))
        self.req_len, self.resp_len = len(request), len(response)


class FlowEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint8),
        ("role", ctypes.c_uint8),
        ("proto", ctypes.c_uint8),
        ("tls", ctypes.c_uint8),
        ("pid", ctypes.c_uint32),
        ("fd", ctypes.c_uint32),
        ("requests", ctypes.c_uint32),
        ("opened_ns", ctypes.c_uint64),
        ("closed_ns", ctypes.c_uint64),
        ("bytes_sent", ctypes.c_uint64),
        ("bytes_recv", ctypes.c_uint64),
        ("laddr", Addr),
        ("raddr", Addr),
        ("comm", ctypes.c_char * 16),
    ]


class ProcessEvent(ctypes.Structure):
    """A process ran a new program or exited: the name cached for its pid is stale."""

    _fields_ = [
        ("type", ctypes.c_uint8),
        ("exited", ctypes.c_uint8),  # 0: exec
        ("pad", ctypes.c_uint8 * 2),
        ("pid", ctypes.c_uint32),
    ]


def _copy(data, event_type):
    """The event at `data` (ring buffer memory, reused once the callback returns) as its own copy."""
    return event_type.from_buffer_copy(ctypes.string_at(data, ctypes.sizeof(event_type)))


def format_addr(addr: Addr) -> tuple[str, int] | None:
    """(ip, port) of a kernel address, or None when the kernel did not learn it."""
    if addr.family == AF_INET:
        return socket.inet_ntop(socket.AF_INET, bytes(addr.ip[:4])), addr.port
    if addr.family == AF_INET6:
        ip = ipaddress.IPv6Address(bytes(addr.ip))
        return str(ip.ipv4_mapped or ip), addr.port
    return None


def find_libssl() -> dict[tuple[int, int], str]:
    """Every distinct libssl file mapped by a running process, reached through that process's
    root so libraries inside containers count too: {(st_dev, st_ino): path}."""
    found: dict[tuple[int, int], str] = {}
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/maps") as maps:
                paths = {line.split(None, 5)[5].strip() for line in maps if "libssl.so" in line}
        except (OSError, IndexError):
            continue
        for mapped in paths:
            if not LIBSSL.search(mapped):
                continue
            path = f"/proc/{pid}/root{mapped}"
            try:
                st = os.stat(path)
            except OSError:
                continue
            found.setdefault((st.st_dev, st.st_ino), path)
    return found


def render_source(
    self_tgid: int, ringbuf_pages: int = RINGBUF_PAGES, scope: CgroupScope | None = None
) -> str:
    """The C that gets compiled, placeholders filled in (`python -m probes --print-bpf`)."""
    return (
        "\n".join(source.read_text() for source in SOURCES)
        .replace("__SELF_TGID__", str(self_tgid))
        .replace("__RINGBUF_PAGES__", str(ringbuf_pages))
        .replace("__CGROUP_ID__", str(scope.cgroup_id if scope else 0))
        .replace("__CGROUP_LEVEL__", str(scope.level if scope else 0))
    )


class SocketTrace:
    """The HTTP and TCP probe: one BPF program set, one ring buffer."""

    def __init__(
        self,
        on_http: Callable[[HttpEvent], None],
        on_flow: Callable[[FlowEvent], None],
        on_process_change: Callable[[int, bool], None],
        scope: CgroupScope | None = None,
    ):
        self.on_http = on_http
        self.on_flow = on_flow
        self.on_process_change = on_process_change  # called with the pid and whether it exited
        self.scope = scope
        self.bpf = None
        self.tls_libraries: dict[tuple[int, int], str] = {}  # (st_dev, st_ino) -> a path to it
        self.malformed_events = 0
        self.callback_errors = 0  # a bug turning one event into a record; logged, never fatal
        self.events_received = 0
        self._poll_ends_at = 0  # events_received at which the current poll stops

    def attach(self) -> None:
        from bcc import BPF  # Debian's python3-bpfcc, linked into the venv

        # TRACEPOINT_PROBE functions attach themselves when the module loads.
        source = render_source(os.getpid(), scope=self.scope)
        self.bpf = BPF(text=source, cflags=[f"-I{BPF_DIR}", "-Wno-macro-redefined"])
        self.bpf["events"].open_ring_buffer(self._on_event)
        seeded = self.seed_existing_sockets()
        log.info("socket_trace attached; %d existing connections seeded from /proc", seeded)

    def detach(self) -> None:
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None
            self.tls_libraries.clear()

    def attach_tls(self) -> list[str]:
        """Hook every libssl the running processes map that is not hooked yet (call again to
        catch libraries of processes started since). Returns the libraries that failed."""
        failed = []
        for key, path in find_libssl().items():
            if key in self.tls_libraries:
                continue
            try:
                for symbol, entry, exit_fn in SSL_HOOKS:
                    self.bpf.attach_uprobe(name=path, sym=symbol, fn_name=entry)
                    if exit_fn:
                        self.bpf.attach_uretprobe(name=path, sym=symbol, fn_name=exit_fn)
            except Exception as exc:  # BCC raises bare Exception when a symbol is missing
                failed.append(f"{path}: {exc}")
                continue
            self.tls_libraries[key] = path
            log.info("TLS uprobes attached to %s", path)
        return failed

    def detach_tls(self) -> None:
        for path in self.tls_libraries.values():
            for symbol, _entry, exit_fn in SSL_HOOKS:
                self.bpf.detach_uprobe(name=path, sym=symbol)
                if exit_fn:
                    self.bpf.detach_uretprobe(name=path, sym=symbol)
        self.tls_libraries.clear()

    @property
    def attached(self) -> bool:
        return self.bpf is not None

    def poll(self, limit: int = POLL_LIMIT_EVENTS) -> int:
        """Drain what the kernel queued since the last poll (events were not woken), at most
        `limit` events; returns how many events that was."""
        if self.bpf is None:
            return 0
        before = self.events_received
        self._poll_ends_at = before + limit
        self.bpf.ring_buffer_consume()
        return self.events_received - before

    def _on_event(self, _ctx, data, size) -> int:
        self._handle(data, size)
        # A negative answer makes libbpf stop consuming (after this event): without it the
        # consume loop never returns while events come faster than we take them, and the
        # worker's main loop, which publishes, heartbeats and applies control, would stall.
        return -1 if self.events_received >= self._poll_ends_at else 0

    def _handle(self, data, size) -> None:
        # An exception here would only be printed by ctypes and the event silently lost.
        self.events_received += 1
        kind = ctypes.cast(data, ctypes.POINTER(ctypes.c_uint8))[0]
        try:
            if kind == EV_HTTP and size >= ctypes.sizeof(HttpEvent):
                self.on_http(_copy(data, HttpEvent))
            elif kind == EV_FLOW and size >= ctypes.sizeof(FlowEvent):
                self.on_flow(_copy(data, FlowEvent))
            elif kind == EV_PROCESS and size >= ctypes.sizeof(ProcessEvent):
                event = _copy(data, ProcessEvent)
                self.on_process_change(event.pid, bool(event.exited))
            else:
                self.malformed_events += 1
        except Exception:
            self.callback_errors += 1
            if self.callback_errors == 1 or self.callback_errors % 10_000 == 0:
                log.exception(
                    "event %d of kind %d could not be turned into a record", self.callback_errors, kind
                )

    def set_switches(self, on: dict[int, bool]) -> None:
        """Switch probes in the kernel: {slot (a protocol id, SLOT_FLOWS): on}."""
        table = self.bpf["switches"]
        for slot, value in on.items():
            table[ctypes.c_int(slot)] = ctypes.c_uint32(int(value))

    def switches(self) -> dict[int, bool]:
        """What the kernel actually has switched on, by slot."""
        if self.bpf is None:
            return dict.fromkeys(range(SLOTS), False)
        table = self.bpf["switches"]
        return {slot: bool(table[ctypes.c_int(slot)].value) for slot in range(SLOTS)}

    def events_by_slot(self) -> dict[int, int]:
        """Exchanges (flows for SLOT_FLOWS) each probe produced since attach, exact."""
        if self.bpf is None:
            return dict.fromkeys(range(SLOTS), 0)
        table = self.bpf["exchanges_by_probe"]
        return {slot: sum(table[ctypes.c_int(slot)]) for slot in range(SLOTS)}

    def connection_bytes(self) -> dict[int, tuple[int, int, int]]:
        """{conn key (tgid << 32 | fd): (opened_ns, bytes sent, bytes received)} of every tracked
        connection, read in one batch (resource records diff it; nothing is added per syscall)."""
        if self.bpf is None:
            return {}
        return {
            getattr(key, "value", key): (conn.opened_ns, conn.bytes_sent, conn.bytes_recv)
            for key, conn in self.bpf["conns"].items_lookup_batch()
        }

    def program_run_time_ns(self) -> dict[str, int] | None:
        """Kernel time spent in our BPF programs since load, {"socket": ns, "tls": ns}, from
        /proc/self/fdinfo (bpf_stats must be enabled); None when the kernel does not say."""
        if self.bpf is None:
            return None
        totals = {"socket": 0, "tls": 0}
        seen = False
        for name, function in self.bpf.funcs.items():
            run_time = fdinfo_field(function.fd, "run_time_ns")
            if run_time is None:
                continue
            seen = True
            totals["tls" if name.startswith(b"ssl_") else "socket"] += run_time
        return totals if seen else None

    def counters(self) -> dict[str, int]:
        """Exact kernel-side totals since attach, summed over CPUs."""
        if self.bpf is None:
            return dict.fromkeys(COUNTERS, 0)
        table = self.bpf["counters"]
        return {name: sum(table[ctypes.c_int(i)]) for i, name in enumerate(COUNTERS)}

    def seed_existing_sockets(self) -> int:
        """Track connections that were open before we attached, so keep-alive clients count."""
        sockets = read_tcp_sockets()
        established = {s.inode: s for s in sockets if s.state == TCP_ESTABLISHED}
        listen_ports = {s.local[1] for s in sockets if s.state == TCP_LISTEN}
        conns = self.bpf["conns"]
        me = os.getpid()
        seeded = 0
        for pid in all_pids():
            if pid == me or (self.scope is not None and not self.scope.contains(pid)):
                continue
            for inode, fd in socket_inodes_of(pid).items():
                sock = established.get(inode)
                if sock is None:
                    continue
                conns[conns.Key((pid << 32) | fd)] = _seed_value(conns.Leaf(), sock, listen_ports)
                seeded += 1
        return seeded


def _seed_value(leaf, sock: TcpSocket, listen_ports: set[int]):
    leaf.role = ROLE_SERVER if sock.local[1] in listen_ports else ROLE_CLIENT
    _fill_addr(leaf.laddr, *sock.local)
    _fill_addr(leaf.raddr, *sock.remote)
    return leaf


def _fill_addr(addr, ip: str, port: int) -> None:

    parsed = ipaddress.ip_address(ip)
    addr.family = AF_INET if parsed.version == 4 else AF_INET6
    addr.port = port
    for i, b in enumerate(parsed.packed):
        addr.ip[i] = b
