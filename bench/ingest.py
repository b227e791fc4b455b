"""Ingester throughput: request records/s turned into rollups by one ingester process on one core,
with SQLite and with PostgreSQL.

For each database a child process pinned to one CPU (sched_setaffinity) sets Django up on a
fresh database (SQLite WAL file; a throwaway PostgreSQL server from tests/servers/databases.py,
which runs in processes of its own), then --reps times publishes the same request paths as
bench/otel_export.py (nginx -> shop-api -> postgres, five request records each, shifted to fresh
minutes every run) to a throwaway Redis and times the ingester's own loop (`Ingester.read` and
`Ingester.process`: decode, aggregate into rollups, edges and samples, commit, acknowledge) until
the stream is empty. The two databases are separate systems, so they are not interleaved: each
child runs its repetitions back to back. The budget (DESIGN.md): >= 50k records/s on one core.

    .venv/bin/python bench/ingest.py [--paths 20000] [--reps 3] [--databases sqlite,postgres]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import exit_on_sigterm, fmt, fmt_spread, results_dir, row, spread, write_result  # noqa: E402

HOUR_NS = 3600 * 10**9
BUDGET = 50_000
CPU = 1  # the core the ingester is pinned to (the other one keeps Redis, the database, the bench)


def child(args) -> None:
    """In the pinned child: every repetition's records/s as JSON lines on stdout."""
    os.sched_setaffinity(0, {CPU % os.cpu_count()})
    os.environ |= {"DJANGO_SETTINGS_MODULE": "obsweb.settings", "LOG_LEVEL": "WARNING"}
    import django
    import redis
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from otel_export import ENTRY_RECORDS, request_paths

    from obsweb.telemetry.ingest import Ingester
    from probes import schema

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    for rep in range(args.reps):
        records = request_paths(args.paths, (rep + 1) * HOUR_NS)
        client.delete(schema.RECORDS_STREAM)
        for start in range(0, len(records), ENTRY_RECORDS):
            chunk = records[start : start + ENTRY_RECORDS]
            client.xadd(schema.RECORDS_STREAM, {schema.RECORDS_FIELD: schema.pack_batch(chunk)})
        ingester = Ingester(client, f"bench-{rep}")
        ingester.ensure_group()
        started = time.perf_counter()
        while entries := ingester.read(block_ms=None):
            ingester.process(entries)
        seconds = time.perf_counter() - started
        client.xgroup_destroy(schema.RECORDS_STREAM, schema.INGEST_GROUP)
        result = {"rep": rep, "records": ingester.stats.records, "seconds": seconds}
        print(json.dumps(result | {"records_per_s": result["records"] / seconds}), flush=True)


def run_database(database: str, args, redis_url: str) -> list[dict]:
    from tests.servers.databases import postgres_server

    with tempfile.TemporaryDirectory(prefix="obsweb-bench-ingest-") as tmp, (
        postgres_server() if database == "postgres" else _nothing()
    ) as server:  # fmt: skip
        if server:
            url = f"postgres://{server.user}:{server.password}@127.0.0.1:{server.port}/obsweb"
        else:
            url = f"sqlite:///{tmp}/ingest.sqlite3"
        env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url}
        command = [sys.executable, __file__, "--child", "--paths", str(args.paths), "--reps", str(args.reps)]
        out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
        if out.returncode != 0:
            raise RuntimeError(f"ingest bench on {database} failed:\n{out.stderr[-2000:]}")
        return [{"database": database, **json.loads(line)} for line in out.stdout.splitlines() if line]


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--paths", type=int, default=20_000, help="request paths per run, 5 records each")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--timeout", type=float, default=600, help="per database")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 paths, 1 rep")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    if args.quick:
        args.paths, args.reps = 2000, 1
    exit_on_sigterm()
    from tests.helpers import redis_server

    runs = []
    with redis_server() as redis_url:
        for database in args.databases.split(","):
            runs += run_database(database, args, redis_url)
            for r in runs[-args.reps :]:
                rate = r["records_per_s"]
                print(f"{database}: {r['records']} records in {r['seconds']:.2f} s = {rate:,.0f}/s")
    summary, table = {}, []
    for database in args.databases.split(","):
        rates = spread([r["records_per_s"] for r in runs if r["database"] == database])
        summary[database] = {"records_per_s": rates}
        table.append(
            row(
                "ingest, one core",
                database,
                f"{fmt(rates['median'], 0)} records/s",
                fmt_spread(rates, 0),
                f">= {BUDGET:,} records/s",
            )
        )
    out = write_result(results_dir(args.quick, args.out), "ingest", args, runs, summary, table)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
