"""The demo shop: a small realistic topology on loopback for obsweb to discover (`make demo`).

    load --https--> web (nginx, TLS) --http--> shop-api --postgresql--> postgresql
                                                        --redis-------> redis <--redis-- worker

    python demo/run.py [--dir .local/demo] [--web-port 8443] ...     (as root, like the probe)

Starts, each in its own process group: a throwaway PostgreSQL cluster in DIR/postgres (made
afresh every start), a Redis of its own (the stack's Redis carries obsweb's telemetry and is
left alone), shop-api, the order worker, nginx with a self-signed certificate made by openssl,
and the load generator (demo/load.py: a compressed day, slow queries, a 5xx burst at the start
and every few minutes). Prints what it started; Ctrl-C or SIGTERM stops all of it.

Naming: every process gets OTEL_SERVICE_NAME, which is how the probe names Python services. nginx,
PostgreSQL and Redis rewrite their environment for their process title, so the probe cannot read
it there; each demo process also runs in a cgroup v2 directory named like a systemd unit
(`obsweb-demo-<web port>/web.service`), which is the probe's next rule: web, postgresql, redis.
Without cgroup v2 (or root) they fall back to executable:port (nginx:8443, postgres:15432, ...).

DIR/demo.json says what runs (pids, process groups, ports, the service names to expect); a
start first kills whatever a previous run killed with SIGKILL left behind.
"""

import argparse
import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parent
REPO = DEMO.parent
POSTGRES_OS_USER = "postgres"  # the server refuses to run as root
DATABASE = USER = "shop"
PASSWORD = "shop-demo-password"  # a throwaway cluster on loopback
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 4  # honcho sends SIGKILL 5 s after its SIGTERM
POLL_S = 0.2
# Start order; stopped in reverse (the load first, the databases last).
WEB, API, WORKER, LOAD, POSTGRES, REDIS = "web", "shop-api", "worker", "load", "postgresql", "redis"
INSTALL_HINT = "apt-get install -y nginx postgresql redis-server openssl (make demo does it)"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the demo shop on loopback until Ctrl-C.")
    parser.add_argument("--dir", type=Path, default=REPO / ".local" / "demo", help="state, data and logs")
    parser.add_argument("--web-port", type=int, default=8443, help="nginx, HTTPS")
    parser.add_argument("--api-port", type=int, default=8090, help="shop-api, HTTP")
    parser.add_argument("--postgres-port", type=int, default=15432)
    parser.add_argument("--redis-port", type=int, default=16379)
    parser.add_argument("--dashboard", default="http://127.0.0.1:8000/", help="where obsweb is, to print")
    parser.add_argument("load_args", nargs="*", help="passed to demo/load.py, after --")
    return parser.parse_args(argv)


class Demo:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dir: Path = args.dir.resolve()
        self.procs: dict[str, subprocess.Popen] = {}
        self.cgroup = cgroup_parent(args.web_port)

    # --- starting ---------------------------------------------------------------------------

    def start(self) -> None:
        check_binaries()
        clean_leftovers(self.dir, self.cgroup)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)  # the postgres user and nginx's workers (nobody) look inside
        check_reachable(self.dir)
        if self.cgroup is not None:
            try:
                self.cgroup.mkdir()
            except OSError as exc:  # a read-only or delegated cgroup tree: names fall back
                print(f"demo: no cgroup for the demo ({exc}); names fall back to executable:port")
                self.cgroup = None
        self.start_postgres()
        self.start_redis()
        dsn = (
            f"host=127.0.0.1 port={self.args.postgres_port} dbname={DATABASE} user={USER} password={PASSWORD}"
        )
        redis_url = f"redis://127.0.0.1:{self.args.redis_port}/0"
        python = sys.executable
        self.spawn(API, [python, str(DEMO / "shop_api.py"), str(self.args.api_port), dsn, redis_url])
        wait_until_listening(self.procs[API], self.args.api_port, self.log(API))
        self.spawn(WORKER, [python, str(DEMO / "worker.py"), redis_url])
        self.start_nginx()
        url = f"https://127.0.0.1:{self.args.web_port}"
        self.spawn(LOAD, [python, str(DEMO / "load.py"), url, *self.args.load_args], log=False)
        self.write_state()

    def start_postgres(self) -> None:
        initdb, postgres = postgres_binary("initdb"), postgres_binary("postgres")
        data = self.dir / "postgres"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir()
        shutil.chown(data, POSTGRES_OS_USER, POSTGRES_OS_USER)
        as_postgres = {"user": POSTGRES_OS_USER, "group": POSTGRES_OS_USER, "extra_groups": []}
        run(
            [initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "-N"],
            as_postgres,
        )
        (data / "pg_hba.conf").write_text(
            "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 md5\n"
        )
        setup = (
            f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}';\n\nCREATE DATABASE {DATABASE} OWNER {USER};\n"
        )
        run([postgres, "--single", "-D", str(data), "-j", "postgres"], as_postgres, stdin=setup)
        server = [postgres, "-D", str(data), "-p", str(self.args.postgres_port), "-k", str(data)]
        server += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=40"]
        self.spawn(POSTGRES, server, user=POSTGRES_OS_USER)
        wait_until_listening(self.procs[POSTGRES], self.args.postgres_port, self.log(POSTGRES))

    def start_redis(self) -> None:
        data = self.dir / "redis"
        data.mkdir(exist_ok=True)
        server = ["redis-server", "--port", str(self.args.redis_port), "--bind", "127.0.0.1"]
        server += ["--save", "", "--appendonly", "no", "--dir", str(data)]
        self.spawn(REDIS, server)
        wait_until_listening(self.procs[REDIS], self.args.redis_port, self.log(REDIS))

    def start_nginx(self) -> None:
        web = self.dir / "nginx"
        web.mkdir(exist_ok=True)
        self_signed = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30"]
        self_signed += [
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(web / "key.pem"),
            "-out",
            str(web / "cert.pem"),
        ]
        run(self_signed, {})
        conf = (DEMO / "nginx.conf.template").read_text()
        (web / "nginx.conf").write_text(
            conf.format(dir=web, web_port=self.args.web_port, api_port=self.args.api_port)
        )
        self.spawn(WEB, ["nginx", "-c", str(web / "nginx.conf"), "-p", str(web)])
        wait_until_listening(self.procs[WEB], self.args.web_port, self.log(WEB))

    def spawn(self, name: str, argv: list[str], user: str | None = None, log: bool = True) -> None:
        """`argv` as the service `name`: its own process group, its cgroup, its log file (or our
        stdout, for the load generator's progress lines)."""
        out = open(self.log(name), "wb") if log else None  # noqa: SIM115 (the child keeps it)
        cgroup = None
        if self.cgroup is not None:
            cgroup = self.cgroup / f"{name}.service"
            cgroup.mkdir(exist_ok=True)
        env = {**os.environ, "OTEL_SERVICE_NAME": name, "PYTHONUNBUFFERED": "1"}
        self.procs[name] = subprocess.Popen(
            argv,
            cwd=self.dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if log else None,
            process_group=0,  # Ctrl-C in a terminal reaches us alone; we stop the groups in order
            preexec_fn=lambda: enter(cgroup, user),
        )
        if out is not None:
            out.close()

    def log(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    # --- what runs --------------------------------------------------------------------------

    def services(self) -> dict[str, str]:
        """The name obsweb gives each demo service: the cgroup unit, else executable:port."""
        if self.cgroup is not None:
            return {name: name for name in (WEB, API, WORKER, POSTGRES, REDIS)}
        return {
            WEB: f"nginx:{self.args.web_port}",
            API: API,
            WORKER: WORKER,
            POSTGRES: f"postgres:{self.args.postgres_port}",
            REDIS: f"redis-server:{self.args.redis_port}",
        }

    def write_state(self) -> None:
        services = self.services()
        state = {
            "pid": os.getpid(),
            "cgroup": str(self.cgroup) if self.cgroup else None,
            "processes": {name: {"pid": p.pid, "pgid": p.pid} for name, p in self.procs.items()},
            "ports": {
                WEB: self.args.web_port,
                API: self.args.api_port,
                POSTGRES: self.args.postgres_port,
                REDIS: self.args.redis_port,
            },
            "services": services,
            "edges": [  # caller, callee, protocol
                [services[WEB], services[API], "http"],
                [services[API], services[POSTGRES], "postgresql"],
                [services[API], services[REDIS], "redis"],
                [services[WORKER], services[REDIS], "redis"],
            ],
        }
        (self.dir / "demo.json").write_text(json.dumps(state, indent=2) + "\n")

    def describe(self) -> str:
        names, a = self.services(), self.args
        lines = [
            "",
            "  demo shop running on loopback:",
            f"    {names[WEB]:<22} https://127.0.0.1:{a.web_port}/catalog  (nginx, self-signed TLS)",
            f"    {names[API]:<22} http://127.0.0.1:{a.api_port}/healthz",
            f"    {names[WORKER]:<22} consumes the Redis stream 'orders'",
            f"    {names[POSTGRES]:<22} 127.0.0.1:{a.postgres_port}, database {DATABASE}",
            f"    {names[REDIS]:<22} 127.0.0.1:{a.redis_port}",
            "    load                   a compressed day of customers, a 5xx burst now and every few minutes",
            f"  logs in {self.dir}/*.log",
            f"  watch it in obsweb: {a.dashboard} (services), {a.dashboard}map/ (service map),",
            f"  {a.dashboard}incidents/ (the 5xx burst opens one within a minute)",
        ]
        if self.cgroup is None:
            lines.append("  (no cgroup v2 here: nginx, PostgreSQL and Redis show as executable:port)")
        lines += ["  stop with Ctrl-C", ""]
        return "\n".join(lines)

    # --- running and stopping ---------------------------------------------------------------

    def supervise(self, stopping: list) -> int:
        """Until a signal arrives (0) or a demo process dies (1)."""
        while not stopping:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    print(f"demo: {name} exited with {proc.returncode}; see {self.log(name)}", flush=True)
                    return 1
            time.sleep(POLL_S)
        return 0

    def stop(self) -> None:
        """The load first, the databases last; SIGKILL for whatever outlives STOP_TIMEOUT_S."""
        for name, proc in reversed(self.procs.items()):
            if proc.poll() is None:
                # PostgreSQL: SIGINT is a fast shutdown (SIGTERM waits for clients to leave).
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT if name == POSTGRES else signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(STOP_TIMEOUT_S / len(self.procs))
        deadline = time.monotonic() + STOP_TIMEOUT_S / 2
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        for proc in self.procs.values():
            kill_group(proc.pid)  # children a server left behind (backends, nginx workers)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1)
        if self.cgroup is not None:
            empty_cgroup(self.cgroup)
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "demo.json").unlink()


# --- processes and cgroups --------------------------------------------------------------------


def cgroup_parent(web_port: int) -> Path | None:
    """DIR for the demo's cgroups under the cgroup v2 mount, or None when there is none to use."""
    if os.geteuid() != 0:
        return None
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return Path(fields[1]) / f"obsweb-demo-{web_port}"
    return None


def enter(cgroup: Path | None, user: str | None) -> None:
    """In the child before exec: join the cgroup (as root), then drop to `user`."""
    if cgroup is not None:
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)


def cgroup_pids(parent: Path) -> list[int]:
    return [int(pid) for procs in parent.glob("**/cgroup.procs") for pid in procs.read_text().split()]


def empty_cgroup(parent: Path) -> None:
    """Kill every process left in the demo's cgroups, then remove them (leaves first)."""
    if not parent.exists():
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while (pids := cgroup_pids(parent)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    for child in sorted(parent.glob("*/"), reverse=True):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        parent.rmdir()


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def clean_leftovers(directory: Path, cgroup: Path | None) -> None:
    """What a previous run killed with SIGKILL left running: its cgroups, else its process groups
    (each checked to still be a group of ours by the recorded leader's command line)."""
    if cgroup is not None and cgroup.exists():
        print(f"demo: stopping what a previous run left in {cgroup}", flush=True)
        empty_cgroup(cgroup)
    state_file = directory / "demo.json"
    if not state_file.exists():
        return
    with contextlib.suppress(OSError, ValueError, KeyError):
        for process in json.loads(state_file.read_text())["processes"].values():
            with contextlib.suppress(OSError):
                if os.getpgid(process["pid"]) == process["pgid"]:
                    kill_group(process["pgid"])
    state_file.unlink()


def check_reachable(directory: Path) -> None:
    """PostgreSQL runs as its own user, nginx's workers as nobody: every parent must let them by."""
    for parent in directory.parents:
        if not os.stat(parent).st_mode & 0o001:
            raise RuntimeError(
                f"{parent} is closed to other users, so PostgreSQL cannot reach {directory}: "
                "pick another --dir, or chmod o+x that directory"
            )


def run(argv: list[str], popen_args: dict, stdin: str | None = None) -> None:
    result = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=START_TIMEOUT_S, **popen_args
    )
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


def wait_until_listening(proc: subprocess.Popen, port: int, log: Path) -> None:
    import socket

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}:\n{tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {START_TIMEOUT_S} s:\n{tail(log)}")


def tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def postgres_binary(name: str) -> str:
    """Debian keeps the PostgreSQL server programs off PATH, per major version."""
    found = shutil.which(name) or max(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), default=None, key=_major
    )
    if found is None:
        raise RuntimeError(f"{name} is not installed: {INSTALL_HINT}")
    return found


def _major(path: str) -> int:
    version = Path(path).parent.parent.name  # /usr/lib/postgresql/15/bin/initdb
    return int(version) if version.isdigit() else 0


def check_binaries() -> None:
    missing = [name for name in ("nginx", "redis-server", "openssl") if shutil.which(name) is None]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not installed: {INSTALL_HINT}")
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam(POSTGRES_OS_USER)
        except KeyError:
            raise RuntimeError(f"no '{POSTGRES_OS_USER}' user to run PostgreSQL as: {INSTALL_HINT}") from None


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    stopping: list[int] = []

    def on_signal(signum, _frame):
        stopping.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    demo = Demo(args)
    try:
        demo.start()
        print(demo.describe(), flush=True)
        status = demo.supervise(stopping)
    except Exception as exc:
        print(f"demo: could not start: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        print("demo: stopping", flush=True)
        demo.stop()
        print("demo: stopped, nothing left running", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
