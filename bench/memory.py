"""Memory of the worker, the ingester and the web process at rest and under load, and the kernel
memory of the worker's BPF maps.

One stack (bench/tracers.py) with the ingester running and our worker (every probe on). At rest:
--rest-seconds after the worker attached, with no traffic but the stack's own. Under load:
bench/loadgen.py sends --rate requests/s to nginx for --seconds while RSS (/proc/<pid>/statm) is
sampled every 0.25 s; the peak is reported. BPF memory is the `memlock` of every map and program
fd the worker holds (/proc/<pid>/fdinfo, what `bpftool map show` reports as bytes_memlock), at rest
and after the load.

    .venv/bin/python bench/memory.py [--rate 5000] [--seconds 10] [--rest-seconds 5]
"""

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402
import tracers  # noqa: E402
from common import bpf_memory, exit_on_sigterm, fmt, results_dir, row, rss_bytes, write_result  # noqa: E402

MIB = 2**20


def peak_rss(pids: dict[str, int], stop: threading.Event, peaks: dict[str, int]) -> None:
    while not stop.wait(0.25):
        for name, pid in pids.items():
            peaks[name] = max(peaks.get(name, 0), rss_bytes(pid) or 0)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rest-seconds", type=float, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s at rest, 2 s of load")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rest_seconds = 2, 2
    exit_on_sigterm()
    with (
        tracers.bench_stack() as bench,
        tracers.tracer(bench, tracers.OBSWEB_ALL, drop_records=False) as worker,
    ):
        pids = {
            "worker": worker.pid,
            "ingester": bench.stack.named["ingest"].pid,
            "web": bench.stack.named["web"].pid,
        }
        time.sleep(args.rest_seconds)
        rest = {name: rss_bytes(pid) for name, pid in pids.items()}
        bpf_rest = bpf_memory(worker.pid)
        peaks, stop = {}, threading.Event()
        sampler = threading.Thread(target=peak_rss, args=(pids, stop, peaks), daemon=True)
        sampler.start()
        load = loadgen.run(bench.http_url, args.rate, args.seconds)
        time.sleep(1.0)  # the ingester's last commits
        stop.set()
        sampler.join()
        bpf_load = bpf_memory(worker.pid)
    result = {
        "rss_rest_bytes": rest,
        "rss_peak_under_load_bytes": peaks,
        "bpf_rest": bpf_rest,
        "bpf_after_load": bpf_load,
        "load": {k: load[k] for k in ("rate", "answered", "achieved_rps")},
    }
    print(result)
    table = [
        row(
            f"RSS, {name}",
            "obsweb-all",
            f"{fmt(rest[name] / MIB, 0)} MiB at rest, {fmt(peaks.get(name, 0) / MIB, 0)} MiB peak "
            f"at {args.rate / 1000:g}k req/s",
        )
        for name in pids
    ]
    table.append(
        row(
            "BPF memory, worker",
            "obsweb-all",
            f"maps {fmt(bpf_load['maps_bytes'] / MIB, 1)} MiB ({bpf_load['maps']} maps), "
            f"programs {fmt(bpf_load['programs_bytes'] / MIB, 1)} MiB",
            "memlock from fdinfo",
        )
    )
    out = write_result(results_dir(args.quick, args.out), "memory", args, [result], result, table)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
