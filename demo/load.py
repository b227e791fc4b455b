"""load: customers of the demo shop, through the HTTPS front (`web`, nginx).

    python demo/load.py URL [--day-s 360] [--burst-every-s 240] ...     (started by demo/run.py)

A few customer threads, each on its own keep-alive HTTPS connection, browse the catalog, place
orders and look them up. The request rate follows a compressed day (a sine from --low-rps to
--high-rps over --day-s seconds, starting mid-morning) and is bounded by it whatever the answers'
speed. Now and then a customer opens an order's history: a slow query (pg_sleep) in PostgreSQL.
During a 5xx burst (--burst-s long, first after --first-burst-s, then every --burst-every-s)
that share of the orders are gift cards, which shop-api fails to price (500): enough errors for
the default alert rule (error rate > 5 % with > 10 requests) to open an incident on `web` and
`shop-api`. Prints a line of what it sent every --report-s seconds.
"""

import argparse
import http.client
import json
import math
import random
import ssl
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

SKUS = ("espresso", "beans-1kg", "grinder", "mug")
BROKEN_SKU = "gift-card"  # shop-api has no price for it: a 500
USER_AGENT = "obsweb-demo-load/1"
TIMEOUT_S = 10
RECENT_ORDERS = 200  # the ids customers look up


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the shop's front, e.g. https://127.0.0.1:8443")
    parser.add_argument("--customers", type=int, default=4, help="threads, one connection each")
    parser.add_argument("--low-rps", type=float, default=4.0, help="requests/s at night")
    parser.add_argument("--high-rps", type=float, default=14.0, help="requests/s at the daily peak")
    parser.add_argument("--day-s", type=float, default=360.0, help="the compressed day's length")
    parser.add_argument("--first-burst-s", type=float, default=5.0, help="when the first 5xx burst begins")
    parser.add_argument("--burst-every-s", type=float, default=240.0, help="time between 5xx bursts")
    parser.add_argument("--burst-s", type=float, default=20.0, help="how long a 5xx burst lasts")
    parser.add_argument("--burst-errors", type=float, default=0.3, help="share of requests failing in one")
    parser.add_argument("--slow-share", type=float, default=0.03, help="share of slow history look-ups")
    parser.add_argument("--report-s", type=float, default=30.0, help="how often to print what was sent")
    return parser.parse_args(argv)


class Schedule:
    """The target rate and the burst state at `t` seconds after the start."""

    def __init__(self, args: argparse.Namespace):
        self.args = args

    def rps(self, t: float) -> float:
        low, high = self.args.low_rps, self.args.high_rps
        # sin starts at 0, halfway between night and peak: mid-morning.
        return low + (high - low) * (1 + math.sin(2 * math.pi * t / self.args.day_s)) / 2

    def in_burst(self, t: float) -> bool:
        since_first = t - self.args.first_burst_s
        return since_first >= 0 and since_first % self.args.burst_every_s < self.args.burst_s


class Customer(threading.Thread):
    def __init__(self, shop: "Shop", number: int):
        super().__init__(name=f"customer-{number}", daemon=True)
        self.shop = shop
        self.conn: http.client.HTTPSConnection | None = None

    def run(self):
        shop = self.shop
        while not shop.stopping.is_set():
            t = time.monotonic() - shop.started
            burst = shop.schedule.in_burst(t)
            method, path, body = shop.next_request(burst)
            status = self.send(method, path, body)
            shop.count(status, burst)
            # Each customer takes its share of the target rate; jitter keeps them from marching.
            pause = shop.args.customers / shop.schedule.rps(t)
            shop.stopping.wait(random.uniform(0.5, 1.5) * pause)

    def send(self, method: str, path: str, body: dict | None) -> int:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"User-Agent": USER_AGENT}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            if self.conn is None:
                self.conn = self.shop.connect()
            self.conn.request(method, path, body=payload, headers=headers)
            response = self.conn.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn = None  # reconnect on the next request
            return 0
        if method == "POST" and response.status == 201:
            self.shop.remember(json.loads(answer)["id"])
        return response.status


class Shop:
    """What the customers share: where the shop is, the orders placed, what was sent."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.schedule = Schedule(args)
        url = urlsplit(args.url)
        self.host, self.port = url.hostname, url.port or 443
        # The demo's certificate is self-signed, made at start: nothing to verify it against.
        self.tls = ssl.create_default_context()
        self.tls.check_hostname = False
        self.tls.verify_mode = ssl.CERT_NONE
        self.lock = threading.Lock()
        self.orders: list[int] = []
        self.sent: Counter = Counter()  # status (0: no answer) -> requests
        self.burst_sent = 0
        self.stopping = threading.Event()
        self.started = time.monotonic()

    def connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, timeout=TIMEOUT_S, context=self.tls)

    def next_request(self, burst: bool) -> tuple[str, str, dict | None]:
        roll = random.random()
        if burst and roll < self.args.burst_errors:
            return "POST", "/orders", {"sku": BROKEN_SKU, "qty": 1}
        with self.lock:
            order = random.choice(self.orders) if self.orders else None
        roll = random.random()
        if order is not None and roll < self.args.slow_share:
            return "GET", f"/orders/{order}/history", None
        if order is not None and roll < 0.35:
            return "GET", f"/orders/{order}", None
        if roll < 0.65:
            return "POST", "/orders", {"sku": random.choice(SKUS), "qty": random.randint(1, 3)}
        return "GET", "/catalog", None

    def remember(self, order_id: int) -> None:
        with self.lock:
            self.orders.append(order_id)
            del self.orders[:-RECENT_ORDERS]

    def count(self, status: int, burst: bool) -> None:
        with self.lock:
            self.sent[status] += 1
            self.burst_sent += burst

    def report(self) -> str:
        t = time.monotonic() - self.started
        with self.lock:
            sent = dict(sorted(self.sent.items()))
        burst = " (5xx burst)" if self.schedule.in_burst(t) else ""
        return f"load: {t:.0f} s, target {self.schedule.rps(t):.1f} requests/s{burst}, answers so far {sent}"


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    shop = Shop(args)
    customers = [Customer(shop, n) for n in range(args.customers)]
    for customer in customers:
        customer.start()
    print(f"load: {args.customers} customers on {args.url}", flush=True)
    while True:  # ends with the process (SIGTERM from demo/run.py)
        time.sleep(args.report_s)
        print(shop.report(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
