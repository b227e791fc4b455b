"""`make bench`: every measurement of bench/ in turn, one summary table, JSON results.

Runs each script as its own process (one stack at a time, never two), with a share of the time
budget as its limit (SIGTERM past it: the script stops its processes and the table says "timed
out"), then prints one markdown table from the `table` rows of their result files and writes
summary.json next to them with the machine, each script's status and duration, and the table.
Full sizes take about 14 minutes on a 2-core machine (15 from a fresh clone, the installs and
bench/rollup_data.py building the dashboard's data included); --quick is a smoke run of a few minutes whose
numbers go to .local/bench-quick/ (never committed).

    sudo .venv/bin/python bench/run.py [--quick] [--only overhead,latency] [--budget-min 20] [--out DIR]
"""

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH, machine, results_dir  # noqa: E402

QUICK_CONFIGS = "off,obsweb-all,bpftrace,tcplife,sslsniff"
# (result name, script, full arguments, quick arguments, expected seconds full / quick)
STEPS = [
    (
        "overhead",
        "overhead.py",
        ["--reps", "2"],
        ["--quick", "--configs", "off,obsweb-all,bpftrace,tcplife,sslsniff"],
        300,
        75,
    ),
    ("completeness", "completeness.py", ["--reps", "1"], ["--quick", "--rates", "1000,5000"], 130, 60),
    ("latency", "latency.py", [], ["--quick"], 70, 60),
    ("ingest", "ingest.py", ["--reps", "2"], ["--quick", "--databases", "sqlite"], 90, 15),
    # The first run also builds the dashboard's data (about 4 minutes, cached in .local/).
    ("dashboard", "dashboard.py", ["--reps", "2", "--give-up-s", "3"], ["--quick"], 420, 30),
    ("memory", "memory.py", [], ["--quick"], 60, 35),
]
GRACE_S = 60  # after SIGTERM, how long a script gets to stop its processes


def run_step(script: str, arguments: list[str], limit: float) -> tuple[str, float]:
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(BENCH / script), *arguments])
    try:
        proc.wait(limit)
        status = "ok" if proc.returncode == 0 else f"failed ({proc.returncode})"
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        status = f"timed out after {limit:.0f} s"
    except KeyboardInterrupt:  # Ctrl-C reached the script too: let it clean up, then stop
        proc.wait(GRACE_S)
        raise
    return status, time.monotonic() - started


def markdown(rows: list[dict]) -> str:
    columns = ("measure", "config", "value", "spread", "budget")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")).replace("|", "/") for c in columns) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated result names: " + ",".join(s[0] for s in STEPS))
    parser.add_argument("--budget-min", type=float, default=25, help="hard stop; full sizes need ~14")
    parser.add_argument(
        "--out", help="results directory (default bench/results, --quick: .local/bench-quick)"
    )
    args = parser.parse_args()
    out = results_dir(args.quick, args.out)
    steps = [s for s in STEPS if not args.only or s[0] in args.only.split(",")]
    planned = sum(s[5] if args.quick else s[4] for s in steps)
    print(f"bench: {len(steps)} steps, about {planned / 60:.0f} min; results in {out}", flush=True)
    deadline = time.monotonic() + 60 * args.budget_min
    statuses, rows = {}, []
    for name, script, full, quick, full_s, quick_s in steps:
        expected = quick_s if args.quick else full_s
        limit = max(expected * 2, 60)
        limit = min(limit, deadline - time.monotonic())
        if limit < min(expected, 60):
            statuses[name] = {"status": "skipped: time budget spent", "seconds": 0}
            continue
        print(f"\n=== {name} ({script}, about {expected} s) ===", flush=True)
        began = time.time()
        status, seconds = run_step(script, [*(quick if args.quick else full), "--out", str(out)], limit)
        statuses[name] = {"status": status, "seconds": round(seconds, 1)}
        result = out / f"{name}.json"
        if status == "ok" and result.exists() and result.stat().st_mtime >= began:
            rows += json.loads(result.read_text()).get("table", [])
        else:
            rows.append({"measure": name, "config": "", "value": status, "spread": "", "budget": ""})
    table = markdown(rows)
    print("\n" + table)
    total = sum(s["seconds"] for s in statuses.values())
    print(
        f"\n{total / 60:.1f} min; "
        + ", ".join(f"{n} {s['status']} {s['seconds']:.0f} s" for n, s in statuses.items())
    )
    summary = {"quick": args.quick, "machine": machine(), "steps": statuses, "table": rows, "markdown": table}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary: {out / 'summary.json'}")
    return 0 if all(s["status"] == "ok" for s in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
