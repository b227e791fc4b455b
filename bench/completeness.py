"""How many requests reach the rollups at 1k, 5k, 10k and 20k requests/s, and how many sampled
records the worker reports dropped.

One stack (bench/tracers.py) and our worker with every probe on (the default), restarted each
repetition; the rates run in rotated order. Each cell pauses the ingester (it runs elsewhere in
production), sends --seconds of fixed-rate load to nginx with bench/loadgen.py, resumes the
ingester and waits until it has acknowledged every stream entry; then compares nginx's request
count in the rollups (GET /api/v1/services, before and after) with the answers the load generator
got, and reads the worker's own exact kernel counters (/metrics): exchanges paired, events lost
to a full ring buffer, records dropped before Redis. Waiting ends when the count reaches the
answers (and the stream is empty), or after it held still for 10 s. The budget (DESIGN.md):
100 % counted at 5k/s sustained, and any loss reported.

    .venv/bin/python bench/completeness.py [--rates 1000,5000,10000,20000] [--seconds 4] [--reps 2]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
import tracers  # noqa: E402
from common import exit_on_sigterm, fmt, fmt_spread, results_dir, row, scaled, spread, write_result  # noqa: E402

COUNTERS = ("exchanges", "events_lost", "records_dropped")


def cell(bench, rate: float, args) -> dict:
    service = bench.service()
    before = tracers.requests_counted(bench, service)
    kernel = tracers.kernel_counters(bench)
    with tracers.paused(bench.stack.named["ingest"]):
        load = loadgen.run(bench.http_url, rate, args.seconds, args.connections, args.processes)
    total, waited = tracers.wait_ingested(
        bench, service, before + load["answered"], timeout=args.ingest_timeout
    )
    after = tracers.kernel_counters(bench)
    counted = total - before
    drops = {name: after.get(name, 0) - kernel.get(name, 0) for name in COUNTERS}
    return {
        "rate": rate,
        "sent": load["sent"],
        "answered": load["answered"],
        "achieved_rps": load["achieved_rps"],
        "loadgen_send_lag_p99_ms": load["send_lag_p99_ms"],
        "counted": counted,
        "counted_share": counted / load["answered"] if load["answered"] else None,
        **drops,
        "events_lost_share": drops["events_lost"] / drops["exchanges"] if drops["exchanges"] else None,
        "ingest_wait_s": waited,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="1000,5000,10000,20000")
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64, help="load generator connections")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--ingest-timeout", type=float, default=120)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 rep of 1 s cells")
    parser.add_argument("--out")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    if args.quick:
        args.reps, args.seconds = 1, 1.0
    exit_on_sigterm()
    runs = []
    with tracers.bench_stack() as bench:
        for rep in range(args.reps):
            with tracers.tracer(bench, tracers.OBSWEB_ALL, drop_records=False):
                shift = rep % len(rates)
                for rate in rates[shift:] + rates[:shift]:
                    runs.append({"rep": rep, **cell(bench, rate, args)})
                    r = runs[-1]
                    print(
                        f"rep {rep} {rate:7.0f}/s: answered {r['answered']}, counted {r['counted']} "
                        f"({fmt(100 * (r['counted_share'] or 0), 1)} %), "
                        f"events lost {r['events_lost']:.0f} of "
                        f"{r['exchanges']:.0f} exchanges, records dropped {r['records_dropped']:.0f}; "
                        f"ingester caught up in {r['ingest_wait_s']:.1f} s",
                        flush=True,
                    )
    summary, table = {}, []
    for rate in rates:
        mine = [r for r in runs if r["rate"] == rate]
        counted = spread([r["counted_share"] for r in mine])
        lost = spread([r["events_lost_share"] for r in mine])
        summary[f"{rate:.0f}"] = {
            "counted_share": counted,
            "events_lost_share": lost,
            "achieved_rps": spread([r["achieved_rps"] for r in mine]),
            "records_dropped": spread([r["records_dropped"] for r in mine]),
        }
        value = (
            f"{fmt(100 * counted['median'] if counted['median'] is not None else None, 1)} % counted, "
            f"{fmt(100 * lost['median'] if lost['median'] is not None else None, 1)} % events dropped "
            f"(reported), {fmt(summary[f'{rate:.0f}']['achieved_rps']['median'], 0)} req/s achieved"
        )
        budget = "100 % counted" if rate == 5000 else ""
        table.append(
            row(f"completeness at {rate / 1000:g}k req/s", "obsweb-all", value,
                "counted " + fmt_spread(scaled(counted, 100), 1, " %"), budget)
        )  # fmt: skip
    out = write_result(results_dir(args.quick, args.out), "completeness", args, runs, summary, table)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
