"""Kernel event to browser: how long after nginx answers a request the dashboard's live overview
shows it, p50/p95/p99.

One stack (bench/tracers.py) with the ingester running and our worker (every probe on). A
websocket client logs in as a viewer (a session cookie, as a browser has) and joins the live
overview (/ws/overview/), the channel the dashboard's overview page listens to; every broadcast
carries the services table of the live window. One keep-alive connection sends --rate requests/s
to nginx for --seconds, noting each request's send time (time.time_ns(), the clock the records'
`ts` use; the answering syscall follows within a fraction of a millisecond, so the numbers err on
the long side by that much). Request i counts as shown when the first broadcast arrives whose
nginx request count reaches baseline + i + 1 (requests go one at a time on one connection, so
they reach the rollups in order); its latency is that arrival time minus its send time. Each
broadcast also carries the newest record timestamp of its commit (`latest_ts_ns`): arrival minus
that is reported as the freshest record's age. The budget (DESIGN.md): p95 under 1 s.

    .venv/bin/python bench/latency.py [--seconds 20] [--rate 20]
"""

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tracers  # noqa: E402
from common import exit_on_sigterm, fmt, percentile, results_dir, row, write_result  # noqa: E402

SESSION = (
    "from django.contrib.auth.models import User\n"
    "from django.test import Client\n"
    "client = Client()\n"
    "client.force_login(User.objects.get(username='e2e'))\n"
    "print(client.cookies['sessionid'].value)\n"
)
SETTLE_S = 2.5  # no nginx traffic for this long: the baseline count is final
WAIT_AFTER_S = 10.0  # the last request must show within this long


class Overview:
    """The websocket's broadcasts: (arrival ns, nginx count or None, latest_ts_ns)."""

    def __init__(self, service: str):
        self.service = service
        self.messages: list[tuple[int, int | None, int | None]] = []
        self.changed = asyncio.Event()

    async def listen(self, socket) -> None:
        async for raw in socket:
            arrived = time.time_ns()
            message = json.loads(raw)
            if message.get("type") != "services":
                continue
            count = next((s["requests"] for s in message["services"] if s["name"] == self.service), None)
            self.messages.append((arrived, count, message.get("latest_ts_ns")))
            self.changed.set()

    def count(self) -> int:
        return next((c for _, c, _ in reversed(self.messages) if c is not None), 0)

    async def until(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count() < count:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                return False
        return True


async def get(reader, writer, request: bytes) -> None:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length")
        ),
        0,
    )
    await reader.readexactly(length)


async def measure(bench, session: str, args) -> dict:
    from websockets.asyncio.client import connect

    web = bench.stack.web_port
    overview = Overview(bench.service())
    headers = {"Cookie": f"sessionid={session}"}
    async with connect(
        f"ws://127.0.0.1:{web}/ws/overview/", origin=f"http://127.0.0.1:{web}", additional_headers=headers
    ) as socket:
        listener = asyncio.create_task(overview.listen(socket))
        reader, writer = await asyncio.open_connection("127.0.0.1", bench.http_port)
        request = f"GET {tracers.STATIC_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        await get(reader, writer, request)  # nginx shows up in the table
        if not await overview.until(1, 30):
            raise TimeoutError("no broadcast showed nginx within 30 s: is the ingester broadcasting?")
        await asyncio.sleep(SETTLE_S)
        baseline = overview.count()
        sent = []
        stop_at = time.monotonic() + args.seconds
        while time.monotonic() < stop_at:
            sent.append(time.time_ns())
            await get(reader, writer, request)
            await asyncio.sleep(random.uniform(0.5, 1.5) / args.rate)  # no aliasing with the 1 s tick
        shown_all = await overview.until(baseline + len(sent), WAIT_AFTER_S)
        writer.close()
        listener.cancel()
    latencies, freshest = [], []
    for arrived, count, latest in overview.messages:
        if latest and count is not None and count > baseline:
            freshest.append((arrived - latest) / 1e6)
    shown = sorted((count, arrived) for arrived, count, _ in overview.messages if count is not None)
    at = 0
    for i, sent_ns in enumerate(sent):
        while at < len(shown) and shown[at][0] < baseline + i + 1:
            at += 1
        if at == len(shown):
            break
        latencies.append((shown[at][1] - sent_ns) / 1e6)
    return {
        "requests": len(sent),
        "shown": len(latencies),
        "shown_all": shown_all,
        "broadcasts": len(overview.messages),
        "latency_ms": {f"p{p}": percentile(latencies, p) for p in (50, 95, 99)}
        | {"max": max(latencies, default=None)},
        "freshest_record_age_ms": {f"p{p}": percentile(freshest, p) for p in (50, 95, 99)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=20, help="requests/s, one at a time")
    parser.add_argument("--quick", action="store_true", help="smoke run: 6 s")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 6
    exit_on_sigterm()
    with tracers.bench_stack() as bench, tracers.tracer(bench, tracers.OBSWEB_ALL, drop_records=False):
        session = bench.stack.manage("shell", "-c", SESSION).strip().splitlines()[-1]  # after shell's notes
        result = asyncio.run(measure(bench, session, args))
    print(json.dumps(result, indent=2))
    lat, fresh = result["latency_ms"], result["freshest_record_age_ms"]
    value = (
        f"p50 {fmt(lat['p50'], 0)} ms, p95 {fmt(lat['p95'], 0)} ms, p99 {fmt(lat['p99'], 0)} ms "
        f"({result['shown']} of {result['requests']} requests shown)"
    )
    table = [
        row("kernel to browser", "obsweb-all", value, f"max {fmt(lat['max'], 0)} ms", "p95 < 1 s"),
        row(
            "freshest record age at arrival",
            "obsweb-all",
            f"p50 {fmt(fresh['p50'], 0)} ms, p95 {fmt(fresh['p95'], 0)} ms",
            f"{result['broadcasts']} broadcasts",
        ),
    ]
    out = write_result(results_dir(args.quick, args.out), "latency", args, [result], result, table)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
