"""shop-api: the demo shop's HTTP service, behind nginx (`web`), in front of PostgreSQL and Redis.

    python demo/shop_api.py PORT POSTGRES_DSN REDIS_URL     (started by demo/run.py)

    GET  /healthz              200, no I/O
    GET  /catalog              the products: Redis GET catalog, on a miss SELECT and SET EX 10
    POST /orders               {"sku", "qty"}: INSERT into PostgreSQL, XADD to the Redis stream
                               `orders` (demo/worker.py consumes it); 201 {"id"}
    GET  /orders/<id>          one SELECT
    GET  /orders/<id>/history  the same order through a slow report query (pg_sleep 0.2-0.8 s)

The bug the demo's 5xx bursts exercise: the price list has no entry for the `gift-card` sku, so
such an order fails with a 500 (a KeyError, as an unhandled exception would in a real service).
The load generator (demo/load.py) orders gift cards only during its bursts.

Each connection (nginx keeps a few alive) is served by one thread holding its own PostgreSQL and
Redis connections for as long as it lives. Standard library plus psycopg and redis only.
"""

import json
import random
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ORDERS_STREAM = "orders"  # demo/worker.py reads it
CATALOG_KEY = "catalog"
CATALOG_TTL_S = 10
PRICES = {"espresso": 250, "beans-1kg": 2400, "grinder": 8900, "mug": 1200}  # cents; no gift-card
SLOW_QUERY_S = (0.2, 0.8)
ORDER = re.compile(r"/orders/(\d+)")
ORDER_HISTORY = re.compile(r"/orders/(\d+)/history")
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS products (sku text PRIMARY KEY, price_cents integer NOT NULL)",
    "CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY, sku text NOT NULL, qty integer NOT NULL,"
    " total_cents integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
)


def redis_client(url: str):
    import redis
    from redis.maint_notifications import MaintNotificationsConfig

    # Redis 7.0 rejects redis-py's CLIENT SETINFO and CLIENT MAINT_NOTIFICATIONS: errors that would
    # colour the demo's Redis red on the map, so the client sends neither.
    return redis.Redis.from_url(
        url,
        lib_name=None,
        lib_version=None,
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )


def create_schema(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        for statement in SCHEMA:
            db.execute(statement)
        for sku, price in PRICES.items():
            db.execute("INSERT INTO products VALUES (%s, %s) ON CONFLICT (sku) DO NOTHING", (sku, price))


class ShopApi(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: nginx reuses its upstream connections
    postgres_dsn = ""
    redis_url = ""

    def setup(self):
        import psycopg

        super().setup()
        self.db = psycopg.connect(self.postgres_dsn, autocommit=True)
        self.cache = redis_client(self.redis_url)

    def finish(self):
        super().finish()
        self.db.close()
        self.cache.close()

    def log_message(self, *args):
        pass  # a line per request would drown the demo's output

    def answer(self, status: int, document: dict) -> None:
        body = json.dumps(document).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        try:
            if self.path == "/healthz":
                self.answer(200, {"status": "ok"})
            elif self.path == "/catalog":
                self.answer(200, self.catalog())
            elif match := ORDER_HISTORY.fullmatch(self.path):
                self.order(int(match.group(1)), slow=True)
            elif match := ORDER.fullmatch(self.path):
                self.order(int(match.group(1)), slow=False)
            else:
                self.answer(404, {"error": "not found"})
        except Exception as exc:  # a real service's error handler: log and answer 500
            self.answer(500, {"error": type(exc).__name__})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        try:
            if self.path == "/orders":
                self.place_order(json.loads(body or b"{}"))
            else:
                self.answer(404, {"error": "not found"})
        except Exception as exc:
            self.answer(500, {"error": type(exc).__name__})

    def catalog(self) -> dict:
        cached = self.cache.get(CATALOG_KEY)
        if cached is not None:
            return json.loads(cached)
        rows = self.db.execute("SELECT sku, price_cents FROM products ORDER BY sku").fetchall()
        catalog = {"products": [{"sku": sku, "price_cents": price} for sku, price in rows]}
        self.cache.set(CATALOG_KEY, json.dumps(catalog), ex=CATALOG_TTL_S)
        return catalog

    def place_order(self, order: dict) -> None:
        sku, qty = str(order["sku"]), int(order.get("qty", 1))
        total = PRICES[sku] * qty  # KeyError for gift-card: the bug behind the 5xx bursts
        (order_id,) = self.db.execute(
            "INSERT INTO orders (sku, qty, total_cents) VALUES (%s, %s, %s) RETURNING id", (sku, qty, total)
        ).fetchone()
        self.cache.xadd(ORDERS_STREAM, {"id": order_id, "sku": sku, "qty": qty}, maxlen=10_000)
        self.answer(201, {"id": order_id})

    def order(self, order_id: int, slow: bool) -> None:
        if slow:
            query = "SELECT id, sku, qty, total_cents, pg_sleep(%s) FROM orders WHERE id = %s"
            row = self.db.execute(query, (round(random.uniform(*SLOW_QUERY_S), 2), order_id)).fetchone()
        else:
            row = self.db.execute("SELECT id, sku, qty, total_cents FROM orders WHERE id = %s", (order_id,))
            row = row.fetchone()
        if row is None:
            self.answer(404, {"error": "no such order"})
        else:
            self.answer(200, {"id": row[0], "sku": row[1], "qty": row[2], "total_cents": row[3]})


def main(argv: list[str]) -> None:
    port, ShopApi.postgres_dsn, ShopApi.redis_url = argv
    create_schema(ShopApi.postgres_dsn)
    server = ThreadingHTTPServer(("127.0.0.1", int(port)), ShopApi)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
