"""Ingester throughput with OTLP export off and on, on the same records.

Starts a throwaway redis-server, real OTLP receivers on loopback (tests/otlp.py: gRPC and
HTTP/protobuf) in a process of their own (so decoding does not count against the ingester), and
a fresh SQLite database; then, interleaved --reps times, publishes the same
request paths (nginx -> shop-api -> postgres, five records each, shifted to fresh minutes per
run) and times `Ingester.process` over them with export off, on over gRPC and on over
HTTP/protobuf (spans and metrics). The export thread works while the ingester does, so its CPU
(the GIL) is in the time. Prints records/s per mode (median), the ratio to "off", and how many
spans each "on" run exported or dropped; writes bench/results/otel_export.json.

    .venv/bin/python bench/otel_export.py [--paths 20000] [--reps 3]
"""

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"
MODES = ("off", "grpc", "http/protobuf")
ENTRY_RECORDS = 500  # records per stream entry, as a busy worker batches them
HOUR_NS = 3600 * 10**9


def request_paths(n: int, shift_ns: int) -> list[dict]:
    """n request paths of five records: nginx serves and calls shop-api, which serves and queries
    postgres, whose server side records the query too."""
    from tests.factories import T0, caller_side, client_request, postgres_request, request

    records = []
    for i in range(n):
        ts = T0 + shift_ns + i * 50_000  # 20k paths a second, so a run covers fresh minutes
        trace = f"{ts:016x}{i:016x}"
        edge, api = f"{(i << 8) | 1:016x}", f"{(i << 8) | 2:016x}"
        route = f"/items/{{id}}/v{i % 20}"
        status = 500 if i % 50 == 0 else 200
        common = {"trace_id": trace, "ts": ts}
        records += [
            request(**common, **{"service.name": "nginx", "span_id": edge, "http.route": "/shop"}),
            client_request(**common, span_id=f"{(i << 8) | 3:016x}", parent_span_id=edge),
            request(
                **common,
                span_id=api,
                error=status == 500,
                **{
                    "http.route": route,
                    "http.response.status_code": status,
                    "client.port": 40000 + i % 20000,
                },
            ),
            caller_side(postgres_request(**common), span_id=f"{(i << 8) | 4:016x}", parent_span_id=api),
            postgres_request(**common, span_id=f"{(i << 8) | 5:016x}"),
        ]
    return records


def serve_receivers(endpoints, stop) -> None:
    """Child process: both receivers, forgetting what they got every second (memory stays flat)."""
    from tests import otlp

    with otlp.grpc_receiver() as grpc_received, otlp.http_receiver() as http_received:
        endpoints.put({"grpc": grpc_received.endpoint, "http/protobuf": http_received.endpoint})
        while not stop.wait(1.0):
            for received in (grpc_received, http_received):
                with received.lock:
                    received.traces.clear()
                    received.metrics.clear()


def run(mode: str, records: list[dict], endpoints: dict, client) -> dict:
    from obsweb.telemetry import otel_export
    from obsweb.telemetry.ingest import Ingester
    from probes import schema

    client.delete(schema.RECORDS_STREAM)
    for start in range(0, len(records), ENTRY_RECORDS):
        chunk = records[start : start + ENTRY_RECORDS]
        client.xadd(schema.RECORDS_STREAM, {schema.RECORDS_FIELD: schema.pack_batch(chunk)})
    export = None
    if mode != "off":
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoints[mode]
        os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] = mode
        export = otel_export.from_environment()
    ingester = Ingester(client, f"bench-{mode}", otlp=export)
    ingester.ensure_group()
    started = time.perf_counter()
    while entries := ingester.read(block_ms=None):
        ingester.process(entries)
    seconds = time.perf_counter() - started
    result = {"mode": mode, "records": ingester.stats.records, "seconds": seconds}
    if export:
        export.shutdown()
        result |= {"spans_exported": export.stats.spans_exported, "spans_dropped": export.stats.spans_dropped}
    client.xgroup_destroy(schema.RECORDS_STREAM, schema.INGEST_GROUP)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=20_000, help="request paths per run (5 records each)")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    from tests.helpers import redis_server

    spawn = multiprocessing.get_context("spawn")  # grpcio does not survive a fork
    queue, stop = spawn.Queue(), spawn.Event()
    child = spawn.Process(target=serve_receivers, args=(queue, stop), daemon=True)
    child.start()
    endpoints = queue.get(timeout=30)
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_url:
        os.environ |= {
            "DJANGO_SETTINGS_MODULE": "obsweb.settings",
            "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
            "REDIS_URL": redis_url,
            "LOG_LEVEL": "WARNING",
        }
        import django
        import redis
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        client = redis.Redis.from_url(redis_url)
        results = []
        for rep in range(args.reps):
            for n, mode in enumerate(MODES):
                shift = (rep * len(MODES) + n + 1) * HOUR_NS
                results.append(run(mode, request_paths(args.paths, shift), endpoints, client))
                print(json.dumps(results[-1]), flush=True)
    stop.set()
    child.join(10)

    summary = {}
    for mode in MODES:
        runs = [r for r in results if r["mode"] == mode]
        summary[mode] = statistics.median(r["records"] / r["seconds"] for r in runs)
    for mode in MODES:
        print(
            f"{mode:>14}: {summary[mode]:9.0f} records/s  ratio to off {summary[mode] / summary['off']:.2f}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "otel_export.json").write_text(
        json.dumps(
            {"machine": platform.node(), "paths": args.paths, "records_per_s": summary, "runs": results},
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
