"""Throughput cost of the probe worker: nginx serving a small static file under wrk.

Runs alternate between "off" (no worker) and "on" (worker attached), several repetitions, and
print requests/s each way with the median ratio, the worker's CPU use during the run, and how
many of wrk's requests reached the rollups (nginx's server-side count through the API). The
ingester is paused (SIGSTOP) during each timed "on" run and resumed after, since in production
it runs on another machine; Redis stays up and takes the worker's writes.

    sudo .venv/bin/python bench/overhead.py [--reps 3] [--seconds 8] [--connections 20]
"""

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import stop  # noqa: E402
from tests.stack import http_backend, nginx_proxy, obsweb_stack  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
RESULTS = Path(__file__).resolve().parent / "results"


def wrk(url: str, seconds: int, connections: int) -> int:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(re.search(r"(\d+) requests in", out).group(1))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def kernel_counters(stack) -> dict[str, float]:
    """The worker's exact kernel-side counters, from its own /metrics."""
    pattern = r'obsweb_agent_kernel_events_total\{counter="(\w+)"\} (\S+)'
    return {name: float(value) for name, value in re.findall(pattern, stack.worker_metrics())}


def nginx_requests(stack, service: str) -> int:
    services = stack.api("/api/v1/services", since="-1h")["services"]
    return next((s["requests"] for s in services if s["name"] == service), 0)


def settled_count(stack, service: str, timeout: float = 60.0) -> int:
    """The rollup count once it stops growing (the worker and ingester have caught up)."""
    last, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = nginx_requests(stack, service)
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 3:
            break
        time.sleep(0.5)
    return last


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--tls", action="store_true", help="nginx serves HTTPS; the TLS uprobes are on")
    args = parser.parse_args()

    rows = []
    with (
        obsweb_stack(with_worker=False) as stack,
        http_backend("bench-backend", env=stack.env) as backend,
        nginx_proxy(backend, tls=args.tls) as port,
    ):
        service = f"nginx:{port}"
        url = f"{'https' if args.tls else 'http'}://127.0.0.1:{port}/static/index.html"
        wrk(url, 2, args.connections)  # warm up nginx and the page cache
        for rep in range(args.reps):
            off = wrk(url, args.seconds, args.connections)
            worker = stack.start_worker()
            before = settled_count(stack, service)
            cpu_before = cpu_seconds(worker.pid)
            # The ingester runs on another machine in production: paused during the timed run,
            # so the ratio is the host's cost (BPF + worker + Redis writes), then it catches up.
            stack.named["ingest"].send_signal(signal.SIGSTOP)
            on = wrk(url, args.seconds, args.connections)
            cpu = cpu_seconds(worker.pid) - cpu_before
            stack.named["ingest"].send_signal(signal.SIGCONT)
            counted = settled_count(stack, service) - before
            kernel = kernel_counters(stack)
            stop(worker)
            stack.procs.remove(worker)
            rows.append(
                {
                    "rep": rep,
                    "off_rps": off / args.seconds,
                    "on_rps": on / args.seconds,
                    "ratio": on / off,
                    "worker_cpu_pct": 100 * cpu / args.seconds,
                    "sent": on,
                    "counted": counted,
                    "kernel_exchanges": kernel.get("exchanges", 0),
                    "kernel_events_lost": kernel.get("events_lost", 0),
                }
            )
            r = rows[-1]
            print(
                f"rep {rep}: off {r['off_rps']:8.0f} req/s, on {r['on_rps']:8.0f} req/s, "
                f"ratio {r['ratio']:.3f}, worker cpu {r['worker_cpu_pct']:5.1f}%, "
                f"counted {counted}/{on} ({100 * counted / on:.1f}%); kernel saw "
                f"{r['kernel_exchanges']:.0f} exchanges (both ends), lost {r['kernel_events_lost']:.0f}"
            )

    summary = {
        "ratio_median": statistics.median(r["ratio"] for r in rows),
        "ratio_spread": [min(r["ratio"] for r in rows), max(r["ratio"] for r in rows)],
        "worker_cpu_pct_median": statistics.median(r["worker_cpu_pct"] for r in rows),
        "counted_share_median": statistics.median(r["counted"] / r["sent"] for r in rows),
    }
    print(
        f"\nthroughput kept with the worker on: {summary['ratio_median']:.3f} "
        f"(spread {summary['ratio_spread'][0]:.3f}-{summary['ratio_spread'][1]:.3f}); "
        f"worker CPU {summary['worker_cpu_pct_median']:.0f}% of one core; "
        f"requests counted in rollups {100 * summary['counted_share_median']:.1f}% of sent"
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("overhead-tls.json" if args.tls else "overhead.json")
    out.write_text(
        json.dumps(
            {
                "machine": {"kernel": platform.release(), "cpus": os.cpu_count()},
                "args": vars(args),
                "runs": rows,
                "summary": summary,
            },
            indent=2,
        )
    )
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
