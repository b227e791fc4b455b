"""What tracing costs nginx, ours and our peers', plain HTTP and HTTPS, measured in one run.

One stack (bench/tracers.py: nginx plain and with TLS, 1 worker, a static file, loopback). Every
repetition attaches each configuration in turn (off, obsweb-all, obsweb-http, bpftrace, tcplife,
tcptracer, sslsniff; the order rotates each repetition), and while it is attached runs, for
HTTP and then HTTPS:
  - saturation: wrk -t2 -c<connections> for --seconds: requests/s, wrk's p50/p99 (closed loop);
  - fixed rate: bench/loadgen.py at --rate (HTTP) or --tls-rate (HTTPS) for --seconds: p50/p99
    latency from the intended send time, and CPU: the tracer process's, and the whole machine's
    busy time divided by the requests answered (so BPF time charged to nginx counts too).
Ratios and differences are taken against "off" of the same repetition, then the median over
repetitions is reported with min-max. The ingester is paused the whole run (it runs elsewhere in
production); Redis takes the worker's writes and is emptied after each obsweb configuration.
sslsniff runs only in the HTTPS cells: it hooks libssl and has nothing to do with plain HTTP.

    .venv/bin/python bench/overhead.py [--reps 3] [--seconds 4] [--rate 5000] [--tls-rate 2000]
        [--configs off,obsweb-all,...] [--protocols http,https] [--quick] [--out DIR]
"""

import argparse
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
import tracers  # noqa: E402
from common import (  # noqa: E402
    cpu_seconds,
    delta,
    exit_on_sigterm,
    fmt,
    fmt_spread,
    machine_busy_seconds,
    read_all,
    results_dir,
    rotations,
    row,
    scaled,
    signed,
    spread,
    write_result,
)

CONFIGS = [
    tracers.OFF,
    tracers.OBSWEB_ALL,
    tracers.OBSWEB_HTTP,
    tracers.BPFTRACE,
    tracers.TCPLIFE,
    tracers.TCPTRACER,
    tracers.SSLSNIFF,
]
PROTOCOLS = ("http", "https")
BUDGET_KEPT = {"http": "obsweb-all >= 92 %", "https": "obsweb-all >= 80 %"}  # DESIGN.md
BUDGET_FIXED = {"http": "obsweb-all: worker < 15 % of a core at 5k/s; <= 2 us CPU/request", "https": ""}
KERNEL = ("exchanges", "events_lost")


def measure_cell(bench, proc, protocol: str, kind: str, args) -> dict:
    """One timed run against one nginx with the current tracer attached. CPU is read over the
    sending window only: the tracer process's, and the whole machine's busy time per request."""
    tls = protocol == "https"
    meters = {"machine_cpu_s": machine_busy_seconds, "wall_s": time.monotonic}
    if proc:
        meters["tracer_cpu_s"] = lambda: cpu_seconds(proc.pid)
    if proc and args.config_now in tracers.OBSWEB:
        meters["kernel"] = lambda: {k: v for k, v in tracers.kernel_counters(bench).items() if k in KERNEL}
    if kind == "saturation":
        before = read_all(meters)
        result = tracers.wrk(bench.url(tls), args.seconds, args.connections)
        window = delta(before, read_all(meters))
        answered = result["requests"]
    else:
        rate = args.tls_rate if tls else args.rate
        result = loadgen.run(
            bench.url(tls), rate, args.seconds, args.loadgen_connections, args.processes, meters
        )
        window = result.pop("window")
        answered = result["achieved_rps"] * result.pop("seconds")
    return {
        **result,
        **{name: window[name] for name in KERNEL if name in window},
        "wall_s": window["wall_s"],
        "tracer_cpu_pct": 100 * window.get("tracer_cpu_s", 0.0) / window["wall_s"],
        "machine_cpu_us_per_request": 1e6 * window["machine_cpu_s"] / max(1, answered),
    }


def run(bench, args) -> list[dict]:
    for tls in (False, True):  # warm up nginx, the TLS session setup and the page cache
        tracers.wrk(bench.url(tls), 1, args.connections)
    runs = []
    for rep, config in rotations(args.configs, args.reps):
        protocols = [p for p in args.protocols if p == "https" or config not in tracers.TLS_ONLY]
        if not protocols or config in args.unavailable:
            continue
        args.config_now = config
        with contextlib.ExitStack() as attached:
            try:
                proc = attached.enter_context(tracers.tracer(bench, config))
            except (RuntimeError, TimeoutError) as exc:  # e.g. a kernel without kprobe events
                args.unavailable[config] = f"{exc}: {tracers.peer_error(bench, config)}"
                print(f"{config} left out: {args.unavailable[config]}", flush=True)
                continue
            for protocol in protocols:
                for kind in ("saturation", "fixed"):
                    cell = measure_cell(bench, proc, protocol, kind, args)
                    runs.append({"rep": rep, "config": config, "protocol": protocol, "kind": kind, **cell})
                    print(_line(runs[-1]), flush=True)
    return runs


def _line(cell: dict) -> str:
    head = f"rep {cell['rep']} {cell['protocol']:<5} {cell['config']:<11} {cell['kind']:<10}"
    if cell["kind"] == "saturation":
        body = f"{cell['rps']:9.0f} req/s p50 {fmt(cell['p50_ms'], 2)} ms p99 {fmt(cell['p99_ms'], 2)} ms"
    else:
        body = (
            f"{cell['achieved_rps']:9.0f} req/s p50 {fmt(cell['p50_ms'], 3)} ms"
            f" p99 {fmt(cell['p99_ms'], 3)} ms lag p99 {fmt(cell['send_lag_p99_ms'], 2)} ms"
        )
    lost = f" lost {cell['events_lost']:.0f}/{cell['exchanges']:.0f}" if "exchanges" in cell else ""
    return (
        f"{head} {body}; tracer cpu {cell['tracer_cpu_pct']:5.1f}%, "
        f"machine {cell['machine_cpu_us_per_request']:6.1f} us/req{lost}"
    )


def summarize(runs: list[dict], args) -> tuple[dict, list[dict]]:
    """Per protocol and config: medians over repetitions of ratios and differences to off."""
    summary, table = {}, []
    for protocol in args.protocols:
        off = {
            (r["rep"], r["kind"]): r for r in runs if r["protocol"] == protocol and r["config"] == tracers.OFF
        }
        for config in args.configs:
            mine = [r for r in runs if r["protocol"] == protocol and r["config"] == config]
            if not mine:
                continue
            sat = [r for r in mine if r["kind"] == "saturation"]
            fixed = [r for r in mine if r["kind"] == "fixed"]
            paired = [(r, off.get((r["rep"], r["kind"]))) for r in mine]
            kept = spread([r["rps"] / o["rps"] for r, o in paired if o and r["kind"] == "saturation"])
            added = {
                f"{name}_added": spread([r[name] - o[name] for r, o in paired if o and r["kind"] == "fixed"])
                for name in ("p50_ms", "p99_ms", "machine_cpu_us_per_request")
            }
            entry = {
                "saturation_rps": spread([r["rps"] for r in sat]),
                "throughput_kept": kept,
                "saturation_p50_ms": spread([r["p50_ms"] for r in sat]),
                "saturation_p99_ms": spread([r["p99_ms"] for r in sat]),
                "saturation_tracer_cpu_pct": spread([r["tracer_cpu_pct"] for r in sat]),
                "fixed_rate": args.tls_rate if protocol == "https" else args.rate,
                "fixed_achieved_rps": spread([r["achieved_rps"] for r in fixed]),
                "fixed_p50_ms": spread([r["p50_ms"] for r in fixed]),
                "fixed_p99_ms": spread([r["p99_ms"] for r in fixed]),
                "fixed_tracer_cpu_pct": spread([r["tracer_cpu_pct"] for r in fixed]),
                "fixed_machine_cpu_us_per_request": spread([r["machine_cpu_us_per_request"] for r in fixed]),
                **added,
            }
            if any("exchanges" in r for r in sat):
                entry["saturation_events_lost_share"] = spread(
                    [r["events_lost"] / r["exchanges"] for r in sat if r.get("exchanges")]
                )
            summary.setdefault(protocol, {})[config] = entry
            table += _rows(protocol, config, entry)
    return summary, table


def _rows(protocol: str, config: str, e: dict) -> list[dict]:
    name = protocol.upper()
    sat = e["saturation_rps"]["median"]
    if config == tracers.OFF:
        kept_text = f"{fmt(sat, 0)} req/s (reference)"
        kept_spread = fmt_spread(e["saturation_rps"], 0)
    else:
        kept = e["throughput_kept"]["median"]
        kept_text = f"{fmt(None if kept is None else 100 * kept, 1)} % kept ({fmt(sat, 0)} req/s)"
        lost = e.get("saturation_events_lost_share", {}).get("median")
        kept_text += f", {fmt(100 * lost, 1)} % events lost" if lost is not None else ""
        kept_spread = fmt_spread(scaled(e["throughput_kept"], 100), 1, " %")
    rate = f"{e['fixed_rate'] / 1000:g}k req/s"
    if config == tracers.OFF:
        fixed_text = (
            f"p50 {fmt(e['fixed_p50_ms']['median'], 3)} ms, p99 {fmt(e['fixed_p99_ms']['median'], 3)} ms, "
            f"{fmt(e['fixed_machine_cpu_us_per_request']['median'], 1)} us CPU/req"
        )
    else:
        fixed_text = (
            f"p50 {signed(e['p50_ms_added']['median'], 3)} ms, "
            f"p99 {signed(e['p99_ms_added']['median'], 3)} ms, "
            f"tracer {fmt(e['fixed_tracer_cpu_pct']['median'], 1)} % CPU, "
            f"{signed(e['machine_cpu_us_per_request_added']['median'], 1)} us CPU/req"
        )
    budget_kept = BUDGET_KEPT[protocol] if config == tracers.OBSWEB_ALL else ""
    budget_fixed = BUDGET_FIXED[protocol] if config == tracers.OBSWEB_ALL else ""
    return [
        row(f"{name} saturation (wrk)", config, kept_text, kept_spread, budget_kept),
        row(f"{name} at {rate}", config, fixed_text, _spread_of(e, config), budget_fixed),
    ]


def _spread_of(e: dict, config: str) -> str:
    s = e["fixed_p99_ms"] if config == tracers.OFF else e["p99_ms_added"]
    return "p99 " + fmt_spread(s, 3, " ms")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4, help="per timed cell")
    parser.add_argument("--connections", type=int, default=20, help="wrk's, at saturation")
    parser.add_argument("--rate", type=float, default=5000, help="fixed rate for HTTP, req/s")
    parser.add_argument("--tls-rate", type=float, default=2000, help="fixed rate for HTTPS, req/s")
    parser.add_argument("--loadgen-connections", type=int, default=32)
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 rep of 1 s cells")
    parser.add_argument(
        "--out", help="results directory (default bench/results, --quick: .local/bench-quick)"
    )
    args = parser.parse_args()
    args.configs = args.configs.split(",")
    args.protocols = args.protocols.split(",")
    if args.quick:
        args.reps, args.seconds = 1, 1.0
    args.config_now = None
    args.unavailable = {}  # config -> why it could not attach on this machine
    exit_on_sigterm()
    with tracers.bench_stack() as bench:
        if tracers.OBSWEB_HTTP in args.configs:
            tracers.configure_http_only(bench)
        with tracers.paused(bench.stack.named["ingest"]):
            runs = run(bench, args)
    del args.config_now
    summary, table = summarize(runs, args)
    summary["unavailable"] = args.unavailable
    for config, reason in args.unavailable.items():
        table.append(row("overhead peers", config, "not run on this machine", reason[-160:]))
    for line in table:
        print(f"{line['measure']:<26} {line['config']:<12} {line['value']}  [{line['spread']}]")
    out = write_result(results_dir(args.quick, args.out), "overhead", args, runs, summary, table)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
