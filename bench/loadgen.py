"""Fixed-rate HTTP/1.1 load with latency measured from the intended send time (wrk2's model).

Why this and not wrk: Debian has no wrk2, and wrk paces only through a Lua `delay()` in whole
milliseconds measured from the previous response, so at 1k-20k req/s over a few connections it
either bursts or turns closed-loop, and it times latency from the actual send, hiding queueing
(coordinated omission). Here each keep-alive connection has a fixed schedule (rate / connections
per second, phases spread evenly); a request due while its connection still waits for the
previous answer goes out as soon as that answer arrives, and its latency still counts from when
it was due. The loop waits with select(), whose timeout has microsecond resolution (epoll's is a
millisecond), and runs in several processes so one Python core is never the limit: about 10 us
of Python per request, so 20k req/s costs the generator roughly 20-30 % of the machine's 2 cores
(reported as `cpu_s`). `send_lag` (actual minus intended send time) shows how far the generator
itself fell behind; latency below its p50 is the generator's floor, not the server's.

    .venv/bin/python bench/loadgen.py URL --rate 5000 --seconds 5 [--connections 32] [--processes 2]
"""

import argparse
import json
import multiprocessing
import os
import select
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds, delta, percentile, read_all  # noqa: E402

DRAIN_S = 2.0  # after the last send, answers still outstanding get this long
CONNECT_TIMEOUT_S = 5.0


class Connection:
    __slots__ = ("sock", "due", "interval", "intended", "sent_at", "buffer", "busy")

    def __init__(self, sock: socket.socket, first_due: float, interval: float):
        self.sock, self.due, self.interval = sock, first_due, interval
        self.intended = self.sent_at = 0.0
        self.buffer = b""
        self.busy = False


def _response_end(buffer: bytes) -> tuple[int, bool]:
    """(index just past one complete response at the start of `buffer` or -1 when it needs more
    bytes, whether the server closes the connection after it)."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return -1, False
    head = buffer[:head_end].lower()
    at = head.find(b"content-length:")
    length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
    end = head_end + 4 + length
    return (end if len(buffer) >= end else -1), b"connection: close" in head


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def _worker(host, port, request, rate, connections, offset, total, start, seconds, out) -> None:
    """One process: `connections` of the `total`, numbered from `offset`, each at rate/total."""
    interval = total / rate
    conns, by_fd = [], {}
    for i in range(connections):
        sock = _connect(host, port)
        conn = Connection(sock, start + interval * (offset + i) / total, interval)
        conns.append(conn)
        by_fd[sock.fileno()] = conn
    end = start + seconds
    latencies, lags, errors = [], [], 0
    sent = 0
    cpu_before = cpu_seconds(os.getpid())
    while True:
        now = time.monotonic()
        next_due = end
        for conn in conns:
            if conn.busy:
                continue
            if conn.due <= now and conn.due < end:
                try:
                    conn.sock.send(request)
                except OSError:
                    errors += 1
                    conn.due += conn.interval
                    continue
                conn.intended, conn.sent_at, conn.busy = conn.due, now, True
                conn.due += conn.interval
                sent += 1
            elif conn.due < next_due:
                next_due = conn.due
        busy = [c.sock for c in conns if c.busy]
        if now >= end and (not busy or now >= end + DRAIN_S):
            break
        timeout = max(0.0, (end + DRAIN_S if now >= end else next_due) - time.monotonic())
        readable = select.select(busy, [], [], timeout)[0] if busy else time.sleep(timeout) or []
        if not readable:
            continue
        now = time.monotonic()
        for sock in readable:
            conn = by_fd[sock.fileno()]
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            closing = not data
            if data:
                conn.buffer += data
                done, closing = _response_end(conn.buffer)
                if done >= 0:
                    conn.buffer = conn.buffer[done:]
                    latencies.append(now - conn.intended)
                    lags.append(conn.sent_at - conn.intended)
                    conn.busy = False
            else:
                errors += 1  # closed with the request unanswered: it counts as lost
                conn.busy = False
            if closing and not conn.busy:
                # nginx closes a keep-alive connection after keepalive_requests (1000): reconnect,
                # as wrk does; the schedule goes on.
                del by_fd[sock.fileno()]
                sock.close()
                conn.sock, conn.buffer = _connect(host, port), b""
                by_fd[conn.sock.fileno()] = conn
    unanswered = sum(c.busy for c in conns)
    for conn in conns:
        conn.sock.close()
    out.send(
        {
            "sent": sent,
            "answered": len(latencies),
            "unanswered": unanswered,
            "errors": errors,
            "latencies": latencies,
            "lags": lags,
            "cpu_s": cpu_seconds(os.getpid()) - cpu_before,
        }
    )
    out.close()


def run(
    url: str, rate: float, seconds: float, connections: int = 32, processes: int = 2, meters=None
) -> dict:
    """Send `rate` requests/s to `url` for `seconds`; answers with counts, latency percentiles
    (ms, from the intended send time), the achieved rate and the generator's own CPU seconds.
    `meters` ({name: function returning a number}) are read when sending starts and when it
    ends; their differences are in the answer's "window"."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    request = f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: obsweb-bench\r\n\r\n"
    processes = max(1, min(processes, connections))
    start = time.monotonic() + 0.5  # every process connected before the first send is due
    fork = multiprocessing.get_context("fork")
    children, pipes = [], []
    offset = 0
    for n in range(processes):
        share = connections // processes + (n < connections % processes)
        receive, send = fork.Pipe(duplex=False)
        args = (host, port, request.encode(), rate, share, offset, connections, start, seconds, send)
        child = fork.Process(target=_worker, args=args, daemon=True)
        child.start()
        send.close()
        children.append(child)
        pipes.append(receive)
        offset += share
    parts_out = []
    try:
        window = _read_meters(meters or {}, start, start + seconds)
        for receive in pipes:
            if not receive.poll(seconds + DRAIN_S + 10):
                raise TimeoutError("a load generator process did not report")
            parts_out.append(receive.recv())
    finally:
        for child in children:
            child.join(5)
            if child.is_alive():
                child.kill()
    return summarize(parts_out, rate, seconds) | {"window": window}


def _read_meters(meters: dict, start: float, end: float) -> dict:
    time.sleep(max(0.0, start - time.monotonic()))
    before = read_all(meters)
    time.sleep(max(0.0, end - time.monotonic()))
    return delta(before, read_all(meters))


def summarize(parts: list[dict], rate: float, seconds: float) -> dict:
    latencies = [x for p in parts for x in p["latencies"]]
    lags = [x for p in parts for x in p["lags"]]
    ms = {f"p{p}_ms".replace(".", "_"): _ms(percentile(latencies, p)) for p in (50, 90, 99, 99.9)}
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": sum(p["sent"] for p in parts),
        "answered": len(latencies),
        "unanswered": sum(p["unanswered"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "achieved_rps": len(latencies) / seconds,
        **ms,
        "max_ms": _ms(max(latencies, default=None)),
        "send_lag_p50_ms": _ms(percentile(lags, 50)),
        "send_lag_p99_ms": _ms(percentile(lags, 99)),
        "cpu_s": sum(p["cpu_s"] for p in parts),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 3)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(run(args.url, args.rate, args.seconds, args.connections, args.processes), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
