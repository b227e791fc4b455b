"""A known three-service shop on loopback, for browser tests and screenshots of a real topology.

    with shop() as s:  # s.frontend_url, s.services, ...
        ...

    frontend --http--> api --postgresql--> PostgreSQL   (SELECT pg_sleep(0.15), <n>)
                           --redis-------> redis-server (GET order:<n>)

frontend: GET /checkout -> api GET /orders/<n> -> 200; GET /boom -> api GET /fail -> 502.
api: GET /orders/<n> -> one slow PostgreSQL query, then one Redis GET -> 200; GET /fail -> 500.
Anything else -> 404. Both HTTP services are this file run as a subprocess, each under its own
OTEL_SERVICE_NAME (that is how the probe names them):

    python -m tests.servers.shop frontend PORT API_PORT
    python -m tests.servers.shop api PORT POSTGRES_DSN REDIS_URL

Each connection to a service is served by one thread, which keeps one keep-alive connection to
the next hop (frontend to api; api to PostgreSQL and to Redis) for as long as it lives. The
PostgreSQL sleep is the one slow step on purpose: a request's waterfall shows it as the longest.
"""

import contextlib
import http.client
import itertools
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.helpers import REPO, free_port, redis_server, stop, wait_for_port
from tests.servers.databases import DATABASE, postgres_server

FRONTEND = "frontend"
API = "api"
ORDER_SQL = "SELECT pg_sleep(0.15), {n}"  # the slow step; the only one
ORDER_ROUTE = re.compile(r"/orders/(\d+)")
UPSTREAM_TIMEOUT_S = 10


@dataclass
class Shop:
    frontend_port: int
    api_port: int
    postgres_port: int
    redis_port: int
    postgres_dsn: str
    frontend_pid: int
    api_pid: int

    @property
    def frontend_url(self) -> str:
        return f"http://127.0.0.1:{self.frontend_port}"

    @property
    def postgres(self) -> str:
        """The name the probe gives PostgreSQL, which rewrites its environment: executable:port."""
        return f"postgres:{self.postgres_port}"

    @property
    def redis(self) -> str:
        return f"redis-server:{self.redis_port}"

    @property
    def services(self) -> tuple[str, ...]:
        return (FRONTEND, API, self.postgres, self.redis)

    @property
    def edges(self) -> set[tuple[str, str]]:
        """Who calls whom, as (caller, callee)."""
        return {(FRONTEND, API), (API, self.postgres), (API, self.redis)}


@contextlib.contextmanager
def shop(env: dict | None = None):
    """PostgreSQL, a Redis of its own, api and frontend on free loopback ports; yields a Shop."""
    with postgres_server() as db, redis_server() as redis_url:
        dsn = f"host=127.0.0.1 port={db.port} dbname={DATABASE} user={db.user} password={db.password}"
        api_port, frontend_port = free_port(), free_port()
        procs = []
        try:
            procs.append(_service(API, [str(api_port), dsn, redis_url], env))
            procs.append(_service(FRONTEND, [str(frontend_port), str(api_port)], env))
            for port in (api_port, frontend_port):
                wait_for_port(port)
            redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
            api, frontend = procs
            yield Shop(frontend_port, api_port, db.port, redis_port, dsn, frontend.pid, api.pid)
        finally:
            for proc in reversed(procs):
                stop(proc)


class Customer:
    """A client of the shop's frontend on one keep-alive connection, like a browser."""

    def __init__(self, shop: Shop):
        self.conn = http.client.HTTPConnection("127.0.0.1", shop.frontend_port, timeout=UPSTREAM_TIMEOUT_S)

    def get(self, path: str, **headers: str) -> int:
        self.conn.request("GET", path, headers=headers)
        response = self.conn.getresponse()
        response.read()
        return response.status

    def shop(self, checkouts: int, booms: int = 0) -> None:
        """`checkouts` GET /checkout (200 each) then `booms` GET /boom (502 each)."""
        for path, count, expected in (("/checkout", checkouts, 200), ("/boom", booms, 502)):
            for _ in range(count):
                status = self.get(path)
                if status != expected:
                    raise AssertionError(f"GET {path} answered {status}, not {expected}")

    def close(self) -> None:
        self.conn.close()


def _service(name: str, args: list[str], env: dict | None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.servers.shop", name, *args],
        cwd=REPO,
        env={**(env or os.environ), "OTEL_SERVICE_NAME": name},
    )


# --- the services ---------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection, one thread, many requests

    def answer(self, status: int, body: bytes = b"ok\n") -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class FrontendHandler(Handler):
    api_port = 0
    orders = itertools.count(1)

    def setup(self):
        super().setup()
        self.api = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=UPSTREAM_TIMEOUT_S)

    def finish(self):
        super().finish()
        self.api.close()

    def call_api(self, path: str) -> int:
        self.api.request("GET", path)
        response = self.api.getresponse()
        response.read()
        return response.status

    def do_GET(self):
        if self.path == "/checkout":
            status = self.call_api(f"/orders/{next(self.orders)}")
            self.answer(200 if status == 200 else 502)
        elif self.path == "/boom":
            status = self.call_api("/fail")
            self.answer(502 if status >= 500 else 200, b"upstream failed\n")
        else:
            self.answer(404, b"not here\n")


class ApiHandler(Handler):
    postgres_dsn = ""
    redis_url = ""

    def setup(self):
        import psycopg
        import redis
        from redis.maint_notifications import MaintNotificationsConfig

        super().setup()
        self.db = psycopg.connect(self.postgres_dsn, autocommit=True)
        # Redis 7.0 rejects redis-py's CLIENT SETINFO and CLIENT MAINT_NOTIFICATIONS: errors that
        # would colour the shop's Redis red on the map, so the client sends neither.
        self.cache = redis.Redis.from_url(
            self.redis_url,
            lib_name=None,
            lib_version=None,
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )

    def finish(self):
        super().finish()
        self.db.close()
        self.cache.close()

    def do_GET(self):
        order = ORDER_ROUTE.fullmatch(self.path)
        if order:
            n = int(order.group(1))
            self.db.execute(ORDER_SQL.format(n=n)).fetchall()
            self.cache.get(f"order:{n}")
            self.answer(200, b'{"order": "ok"}\n')
        elif self.path == "/fail":
            self.answer(500, b"failed\n")
        else:
            self.answer(404, b"not here\n")


def main(argv: list[str]) -> None:
    role, port, *rest = argv
    if role == FRONTEND:
        FrontendHandler.api_port = int(rest[0])
        handler = FrontendHandler
    else:
        ApiHandler.postgres_dsn, ApiHandler.redis_url = rest
        handler = ApiHandler
    server = ThreadingHTTPServer(("127.0.0.1", int(port)), handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
