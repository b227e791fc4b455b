"""Who is on either end of a socket: service names for processes, owners of listening ports.

A service is named, in order (DESIGN.md: Service identity): OTEL_SERVICE_NAME from the
process environment; the container or systemd unit from its cgroup (in a Kubernetes cluster, the
pod's `<namespace>/<workload>`, probes/kubernetes.py); the executable name
plus its lowest listening port; the bare executable name for processes that never listen.
Everything is read from /proc and cached: these lookups run per new process, not per event.
"""

import ipaddress
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from probes import kubernetes

PROC = Path("/proc")
TCP_LISTEN = "0A"  # st column of /proc/net/tcp
TCP_ESTABLISHED = "01"
SOCKET_TABLE_MIN_AGE_S = 2.0  # a cache miss rescans /proc at most this often
NAME_TTL_S = 60.0  # re-resolve after this long even when no exec or exit was reported (one lost)
# An exited process keeps its name this long, for its records still to come (its last CPU
# interval): its pid is free for another process after that, which takes far more forks.
EXITED_NAME_TTL_S = 5.0
_CONTAINER_ID = re.compile(r"(?:docker|cri-containerd|crio|containerd|libpod)[-/]([0-9a-f]{12,64})")
_KUBEPODS_ID = re.compile(r"/kubepods[^\n]*/(?:[^/]*-)?([0-9a-f]{64})")
_UNIT = re.compile(r"/([^/]+)\.service$")


@dataclass(frozen=True, slots=True)
class TcpSocket:
    inode: int
    local: tuple[str, int]
    remote: tuple[str, int]
    state: str


def _parse_hex_address(text: str) -> tuple[str, int]:
    ip_hex, port_hex = text.split(":")
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        ip = ipaddress.IPv4Address(raw[::-1])
    else:  # four little-endian 32-bit words
        ip = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
        if ip.ipv4_mapped:
            ip = ip.ipv4_mapped
    return str(ip), int(port_hex, 16)


def read_tcp_sockets(proc: Path = PROC) -> list[TcpSocket]:
    """Every TCP socket in this network namespace, from /proc/net/tcp and tcp6."""
    sockets = []
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10:
                continue
            sockets.append(
                TcpSocket(int(cols[9]), _parse_hex_address(cols[1]), _parse_hex_address(cols[2]), cols[3])
            )
    return sockets


def socket_inodes_of(pid: int, proc: Path = PROC) -> dict[int, int]:
    """{socket inode: fd} for one process; empty when it is gone or not ours to read."""
    found = {}
    fd_dir = proc / str(pid) / "fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(fd_dir / fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found[int(target[8:-1])] = int(fd)
    return found


def all_pids(proc: Path = PROC) -> list[int]:
    return [int(name) for name in os.listdir(proc) if name.isdigit()]


@dataclass
class SocketTable:
    """Listening ports and which processes own them, rescanned lazily and rate-limited."""

    proc: Path = PROC
    pid_by_port: dict[int, int] = field(default_factory=dict)
    local_ips: set[str] = field(default_factory=set)
    own_ports: set[int] = field(default_factory=set)  # the worker's own sockets (Redis)
    scanned_at: float = 0.0

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.scanned_at < SOCKET_TABLE_MIN_AGE_S:
            return
        self.scanned_at = now
        sockets = read_tcp_sockets(self.proc)
        listening = {s.inode: s.local[1] for s in sockets if s.state == TCP_LISTEN}
        local_port_of = {s.inode: s.local[1] for s in sockets}
        by_port: dict[int, int] = {}
        for pid in all_pids(self.proc):
            for inode in socket_inodes_of(pid, self.proc):
                port = listening.get(inode)
                if port is not None:
                    # Inherited sockets (nginx workers): the lowest pid, usually the parent, owns it.
                    by_port[port] = min(pid, by_port.get(port, pid))
        me = os.getpid()
        self.own_ports = {local_port_of[i] for i in socket_inodes_of(me, self.proc) if i in local_port_of}
        self.local_ips = {s.local[0] for s in sockets if s.local[0] not in ("0.0.0.0", "::")}
        self.pid_by_port = by_port

    def forget(self, pid: int) -> None:
        """`pid` exited: the ports it owned are looked up again when next asked."""
        for port in [port for port, owner in self.pid_by_port.items() if owner == pid]:
            del self.pid_by_port[port]

    def owner_of_port(self, port: int) -> int | None:
        if port not in self.pid_by_port:
            self.refresh()
        return self.pid_by_port.get(port)

    def listen_ports_of(self, pid: int) -> set[int]:
        """Ports `pid` listens on, read now (names are resolved once per process, so a
        stale table would misname every process that started listening since it was read: a
        0.5 s old table did, in CI). A process with no socket at all listens on nothing: that
        skips reading /proc/net/tcp, which costs milliseconds with tens of thousands of
        connections, for most of the processes naming sees."""
        inodes = socket_inodes_of(pid, self.proc)
        if not inodes:
            return set()
        listening = {s.inode: s.local[1] for s in read_tcp_sockets(self.proc) if s.state == TCP_LISTEN}
        return {listening[i] for i in inodes if i in listening}


def _read(path: Path, limit: int = 1 << 16) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return b""


def otel_service_name(pid: int, proc: Path = PROC) -> str | None:
    for entry in _read(proc / str(pid) / "environ").split(b"\0"):
        if entry.startswith(b"OTEL_SERVICE_NAME="):
            value = entry[len(b"OTEL_SERVICE_NAME=") :].decode("utf-8", "replace").strip()
            return value[:255] or None
    return None


def cgroup_service_name(pid: int, proc: Path = PROC) -> str | None:
    text = _read(proc / str(pid) / "cgroup").decode("utf-8", "replace")
    match = _CONTAINER_ID.search(text) or _KUBEPODS_ID.search(text)
    if match:
        return f"container-{match.group(1)[:12]}"
    for line in text.splitlines():
        unit = _UNIT.search(line)
        if unit:
            return unit.group(1)
    return None


def comm_of(pid: int, proc: Path = PROC) -> str | None:
    comm = _read(proc / str(pid) / "comm").decode("utf-8", "replace").strip()
    return comm or None


class ServiceNames:
    """Service name per process id, cached with a TTL."""

    def __init__(self, sockets: SocketTable, proc: Path = PROC, pods: object = kubernetes.FROM_ENVIRONMENT):
        self.sockets = sockets
        self.proc = proc
        # In a cluster, containers are named `<namespace>/<workload>` (probes/kubernetes.py); None
        # outside one, where names do not change.
        self.pods: kubernetes.NodePods | None = (
            kubernetes.node_pods() if pods is kubernetes.FROM_ENVIRONMENT else pods
        )
        self._cache: dict[int, tuple[float, str]] = {}  # pid -> (expires at, name)
        self._served_ports: dict[int, set[int]] = {}  # pid -> local ports it answered requests on

    def name_for(self, pid: int, comm: str = "") -> str:
        """The service name of `pid`. `comm` is the kernel's name of the thread that made the
        event: it names a process that exited before we looked (else /proc is preferred, since a
        thread's name is not its process's)."""
        cached = self._cache.get(pid)
        now = time.monotonic()
        if cached and now < cached[0]:
            return cached[1]
        name, ttl = otel_service_name(pid, self.proc), NAME_TTL_S
        if not name and self.pods is not None:
            name, settled = self.pods.service_name(
                _read(self.proc / str(pid) / "cgroup").decode("utf-8", "replace")
            )
            if not settled:  # its pod is being looked up: the container name for now, asked again soon
                ttl = kubernetes.PENDING_NAME_TTL_S
        name = name or cgroup_service_name(pid, self.proc)
        if not name:
            base = comm_of(pid, self.proc) or comm or f"pid-{pid}"
            # Forked servers (PostgreSQL backends) close the listening socket they were born
            # with: the port they answer on names them like their parent.
            ports = self.sockets.listen_ports_of(pid) or self._served_ports.get(pid, set())
            name = f"{base}:{min(ports)}" if ports else base
        if len(self._cache) > 50_000:  # pids churn; never grow without bound
            self._cache.clear()
        self._cache[pid] = (now + ttl, name)
        return name

    def process_changed(self, pid: int, exited: bool) -> None:
        """The kernel reports that `pid` exec'd (named afresh from now) or exited (its name lasts
        EXITED_NAME_TTL_S more, then the pid may be another process's)."""
        self._served_ports.pop(pid, None)
        if not exited:
            self._cache.pop(pid, None)
            return
        cached = self._cache.get(pid)
        if cached:
            self._cache[pid] = (min(cached[0], time.monotonic() + EXITED_NAME_TTL_S), cached[1])
        self.sockets.forget(pid)

    def learn_server_port(self, pid: int, port: int) -> None:
        """A server-side exchange proves `pid` listens on `port`: callees resolve without a rescan."""
        served = self._served_ports.setdefault(pid, set())
        if port not in served:
            if len(self._served_ports) > 50_000:  # pids churn; never grow without bound
                self._served_ports.clear()
                served = self._served_ports.setdefault(pid, set())
            served.add(port)
            self._cache.pop(pid, None)
        self.sockets.pid_by_port[port] = pid
