"""`python -m probes`: the probe worker (root). `--print-bpf` shows the generated C of every program
without loading it."""

import argparse
import logging
import os
import socket
import sys

from probes.programs.socket_trace import render_source
from probes.publisher import DEFAULT_BUFFER_LIMIT
from probes.scope import ScopeError, cgroup_scope


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m probes", description=__doc__)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--host-name", default=os.environ.get("OBSWEB_HOST_NAME") or socket.gethostname())
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("OBSWEB_METRICS_PORT", 8080)),
        help="Prometheus metrics about the worker itself; 0 disables",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=int(os.environ.get("OBSWEB_HEALTH_PORT", 8081)),
        help="/healthz; 0 disables",
    )
    parser.add_argument(
        "--cgroup",
        default=os.environ.get("OBSWEB_CGROUP") or None,
        help="watch only the processes in this cgroup v2 directory (and below), as one host; "
        "run one worker per cgroup to make one machine several hosts",
    )
    parser.add_argument(
        "--buffer-records",
        type=int,
        default=int(os.environ.get("OBSWEB_BUFFER_RECORDS", DEFAULT_BUFFER_LIMIT)),
        help="records held in memory while Redis is unreachable; newer ones are dropped and counted",
    )
    parser.add_argument("--print-bpf", action="store_true", help="print the generated BPF C and exit")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        scope = cgroup_scope(args.cgroup) if args.cgroup else None
    except ScopeError as exc:
        print(f"--cgroup: {exc}", file=sys.stderr)
        return 2
    if args.print_bpf:
        from probes.programs.block_io import BlockIO
        from probes.programs.sched import Sched
        from probes.programs.tcp_stats import TcpStats

        print(render_source(os.getpid(), scope=scope))
        for program in (Sched(), BlockIO(), TcpStats(on_health=print, scope=scope)):
            print(program.render())
        return 0
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s probes %(levelname)s %(message)s"
    )
    if os.geteuid() != 0:
        print(
            "the probe worker loads BPF programs and must run as root (CAP_BPF, CAP_PERFMON)", file=sys.stderr
        )
        return 2
    from probes.agent import Agent, serve_health, serve_metrics

    agent = Agent(args.redis_url, args.host_name, scope, buffer_records=args.buffer_records)
    agent.install_signal_handlers()
    if args.metrics_port:
        serve_metrics(agent, args.metrics_port)
    if args.health_port:
        serve_health(agent, args.health_port)
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
