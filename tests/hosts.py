"""Several hosts on one machine, for tests: each a network namespace plus a cgroup v2 subtree.

    with simulated_host("a") as host:
        proc = host.spawn(["python", "server.py"], env)   # runs inside both
        stack.start_worker(host.name, cgroup=host.cgroup)  # a worker that sees only this host

A process enters the cgroup before it execs into the namespace (`ip netns exec`), so everything
it starts is inside both. On exit every process left in the cgroup is killed and the namespace
and cgroup are removed. Names carry the test process's pid, so parallel runs do not collide.
"""

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from probes.scope import cgroup2_root

KILL_WAIT_S = 5.0


@dataclass
class SimulatedHost:
    name: str
    netns: str
    cgroup: Path

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside this host's cgroup and network namespace."""
        enter = f'echo $$ > "{self.cgroup}/cgroup.procs" && exec ip netns exec "{self.netns}" "$@"'
        return ["sh", "-c", enter, "sh", *argv]

    def spawn(self, argv: list[str], env: dict | None = None, **popen_args) -> subprocess.Popen:
        return subprocess.Popen(self.command(argv), env=env, **popen_args)

    def run(
        self, argv: list[str], env: dict | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv), env=env, capture_output=True, text=True, timeout=timeout)

    def wait_for_port(self, port: int, timeout: float = 15.0, address: str = "127.0.0.1") -> None:
        """Until something listens on address:port inside this host."""
        probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout=1).close()"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.run(["python3", "-c", probe], timeout=10).returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"nothing listens on {address}:{port} in {self.name} after {timeout} s")


@contextlib.contextmanager
def simulated_host(name: str):
    tag = f"obsweb-{os.getpid()}-{name}"
    cgroup = cgroup2_root() / tag
    subprocess.run(["ip", "netns", "add", tag], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", tag, "link", "set", "lo", "up"], check=True, capture_output=True)
        cgroup.mkdir()
        yield SimulatedHost(name=name, netns=tag, cgroup=cgroup)
    finally:
        _empty(cgroup)
        subprocess.run(["ip", "netns", "delete", tag], capture_output=True)


def _empty(cgroup: Path) -> None:
    """Kill what is left in the cgroup, then remove it (a cgroup with processes cannot go)."""
    if not cgroup.exists():
        return
    deadline = time.monotonic() + KILL_WAIT_S
    while time.monotonic() < deadline:
        pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        cgroup.rmdir()
