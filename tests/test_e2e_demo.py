"""`make demo` on the real kernel: demo/run.py next to a whole obsweb stack (probe worker, ingester,
web, Celery worker and beat) for up to 60 s. Through the API: the five demo services, the edges
web->shop-api, shop-api->postgresql, shop-api->redis and worker->redis, TLS on web's requests and an
incident opened by the 5xx burst the load generator starts with. Then Ctrl-C (SIGINT) stops the
demo and nothing of it is left running: no recorded process or process group, no demo cgroup."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, free_port
from tests.stack import PYTHON, obsweb_stack
from tests.test_e2e_pipeline import wait_until

pytestmark = pytest.mark.bpf
RUN_S = 60  # the budget: everything must show within it
START_S = 60  # PostgreSQL's initdb, the certificate, the servers
STOP_S = 10  # run.py stops everything in under 5 s (honcho's SIGKILL comes after 5)
EVALUATION_INTERVAL_S = 5  # the default is 15 s; shorter so the incident opens well within RUN_S
SERVICES = ("web", "shop-api", "worker", "postgresql", "redis")


def start_celery(stack) -> None:
    """A Celery worker with beat, as tests/test_e2e_incidents.py runs it: evaluates alert rules."""
    env = stack.env | {"ALERT_EVALUATION_INTERVAL_S": str(EVALUATION_INTERVAL_S)}
    beat_schedule = stack.tmp / "celerybeat-schedule"
    args = [PYTHON, "-m", "celery", "-A", "obsweb", "worker", "-B", "--concurrency", "1", "-l", "info"]
    args += ["-s", str(beat_schedule), "--without-gossip", "--without-mingle"]
    stack.spawn("celery", args, env=env)


def start_demo(stack, directory: Path) -> tuple[subprocess.Popen, dict]:
    """demo/run.py on free ports; returns it and its demo.json once everything is up."""
    ports = {name: free_port() for name in ("web", "api", "postgres", "redis")}
    args = [PYTHON, str(REPO / "demo" / "run.py"), "--dir", str(directory), "--dashboard", f"{stack.web}/"]
    args += [f"--{name}-port={port}" for name, port in ports.items()]
    proc = stack.spawn("demo", args)
    state_file = directory / "demo.json"
    deadline = time.monotonic() + START_S
    while not state_file.exists():
        assert proc.poll() is None, f"demo/run.py exited with {proc.returncode}:\n{stack.log('demo')}"
        assert time.monotonic() < deadline, f"the demo did not start in {START_S} s:\n{stack.log('demo')}"
        time.sleep(0.2)
    return proc, json.loads(state_file.read_text())


def seen(stack, state: dict) -> dict:
    """What the API shows of the demo so far."""
    names = state["services"]
    services = {s["name"]: s for s in stack.api("/api/v1/services", since="-15m")["services"]}
    edges = {
        (e["source"], e["target"], e["protocol"]): e
        for e in stack.api("/api/v1/edges", since="-15m")["edges"]
    }
    on_map = set(services) | {name for source, target, _ in edges for name in (source, target)}
    served = [
        r
        for r in stack.api("/api/v1/requests", service=names["web"], limit=50)["requests"]
        if r["span.kind"] == "server"
    ]
    demo_services = {names["web"], names["shop-api"]}
    incidents = [i for i in stack.api("/api/v1/incidents")["incidents"] if i["service"] in demo_services]
    return {
        "services": {name: names[name] in on_map for name in SERVICES},
        "servers": {name: names[name] in services for name in ("web", "shop-api", "postgresql", "redis")},
        "edges": {tuple(edge): tuple(edge) in edges for edge in state["edges"]},
        "web_tls": bool(served) and all(r["tls"] for r in served),
        "incidents": incidents,
        "raw": {"services": services, "edges": edges},
    }


def complete(view: dict) -> bool:
    return (
        all(view["services"].values())
        and all(view["servers"].values())
        and all(view["edges"].values())
        and view["web_tls"]
        and bool(view["incidents"])
    )


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def group_members(pgids: set[int]) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[2]) in pgids:  # state, ppid, pgrp
            members.append(int(stat.parent.name))
    return members


def test_the_demo_shows_its_services_edges_tls_and_an_incident_then_stops_clean():
    # Not under the stack's directory: TemporaryDirectory makes it 0700, closed to the postgres user.
    demo_dir = Path(tempfile.mkdtemp(prefix="obsweb-demo-"))
    os.chmod(demo_dir, 0o755)
    started = time.monotonic()
    try:
        with obsweb_stack() as stack:
            run_demo_and_check(stack, demo_dir, started)
    finally:
        shutil.rmtree(demo_dir, ignore_errors=True)


def run_demo_and_check(stack, demo_dir: Path, started: float) -> None:
    start_celery(stack)
    wait_until(lambda: stack.worker_health()["probes"]["tls"]["actual"], "TLS uprobes attached", stack)
    stack_s = time.monotonic() - started
    demo, state = start_demo(stack, demo_dir)
    demo_started = time.monotonic()
    try:
        view = None
        while time.monotonic() - demo_started < RUN_S:
            view = seen(stack, state)
            if complete(view):
                break
            assert demo.poll() is None, f"the demo stopped:\n{stack.log('demo')}"
            time.sleep(2)
        found_s = time.monotonic() - demo_started
        assert view is not None and complete(view), (
            f"after {RUN_S} s: { ({k: v for k, v in view.items() if k != 'raw'}) }\n"
            f"services {sorted(view['raw']['services'])}\nedges {sorted(view['raw']['edges'])}\n"
            f"demo log:\n{stack.log('demo')[-2000:]}\ningest log:\n{stack.log('ingest')[-3000:]}\n"
            f"probe worker log:\n{stack.log('worker')[-2000:]}\ncelery log:\n{stack.log('celery')[-1000:]}"
        )
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        demo.wait(STOP_S)
    stop_s = time.monotonic() - demo_started - found_s

    raw, names, incident = view["raw"], state["services"], view["incidents"][0]
    print(
        f"\nstack up in {stack_s:.0f} s; demo services, edges, TLS and an incident seen after "
        f"{found_s:.0f} s; demo stopped in {stop_s:.1f} s"
    )
    for name in SERVICES:
        row = raw["services"].get(names[name], {})
        counts = f"{row['requests']} requests, {row['errors']} errors" if row else "a caller only"
        print(f"  {names[name]}: {counts}")
    for source, target, protocol in state["edges"]:
        edge = raw["edges"][(source, target, protocol)]
        print(f"  {source} -> {target} ({protocol}): {edge['requests']} requests, p99 {edge['p99_ms']} ms")
    print(f"  incident #{incident['id']} on {incident['service']}: {incident['rule']}, {incident['state']}")
    assert incident["rule"] == "Error rate above 5 %"
    assert raw["services"][names["web"]]["errors"] > 0

    assert demo.returncode == 0, stack.log("demo")[-3000:]
    assert not (demo_dir / "demo.json").exists()
    pids = {process["pid"] for process in state["processes"].values()}
    pgids = {process["pgid"] for process in state["processes"].values()}
    assert [pid for pid in pids if running(pid)] == []
    assert group_members(pgids) == []
    if state["cgroup"]:
        assert not os.path.exists(state["cgroup"])
