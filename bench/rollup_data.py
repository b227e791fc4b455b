"""Seven days of telemetry for 200 services on 10 hosts, written the way the ingester writes it.

bench/dashboard.py builds its database with this module; it also runs alone:

    .venv/bin/python bench/rollup_data.py [--db PATH] [--days 7]

PATH is a SQLite file, made afresh (default .local/bench-dashboard.sqlite3). With DATABASE_URL set
(postgres://...) the rows go to that database instead, which must be migrated-empty, and PATH
only holds the marker file saying the data is there. The marker (PATH + ".json") records when
"now" was for the data, the density and the row counts; a run that finds it generates nothing.

The fleet: 170 HTTP services (34 domains x gateway, web, api, svc, worker) and 30 datastores
(PostgreSQL, MySQL, Redis), 10 endpoints each (routes, or normalized queries and commands),
on 10 hosts. Traffic is heavy-tailed (service k by rank gets BUSIEST_PER_MINUTE / k**1.1, the
j-th endpoint of a service a share ~ 1/j**1.5) and follows the day (0.5x at night, 1.5x in
the afternoon, UTC). HTTP answers are mostly 200 with a few 404 and 500, and three incidents
of 500s; datastores answer with status 0 and a few errors. Each service calls 2-4 others
(callers in earlier roles call later ones and datastores), plus six external peers.
DENSITY below says how many minutes hold rows, and why.
"""

import argparse
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from obsweb.telemetry import histogram  # noqa: E402  (framework-free: no Django needed yet)

DEFAULT_DB = ROOT / ".local" / "bench-dashboard.sqlite3"
SEED = 20261127

DAYS = 7
DENSE_HOURS = 24  # every minute of the last day has its rows, as the ingester writes them ...
SPARSE_EVERY = 10  # ... before that, one minute in ten holds the traffic of those ten minutes
DENSITY = (
    f"last {DENSE_HOURS} h: a row for every minute in which an endpoint (or edge) had traffic "
    f"(Poisson at its rate: busy endpoints every minute, the quiet tail in some); before that, "
    f"one minute in {SPARSE_EVERY} carries the traffic of those {SPARSE_EVERY} minutes, so the "
    f"counts of any window stay real while the older days hold a tenth of the rows a fleet this "
    f"busy writes (every minute of 7 days would be ~20 M rollup rows and ~15 min to generate here)"
)

HOST_COUNT = 10
ENDPOINTS_PER_SERVICE = 10
DOMAINS = (
    "checkout", "cart", "payments", "billing", "invoices", "orders", "inventory", "catalog",
    "search", "pricing", "shipping", "returns", "users", "accounts", "auth", "sessions",
    "profiles", "reviews", "ratings", "recommendations", "ads", "media", "images",
    "notifications", "email", "sms", "chat", "feeds", "geo", "maps", "analytics", "reports",
    "audit", "config",
)  # fmt: skip
HTTP_ROLES = ("gateway", "web", "api", "svc", "worker")  # a role calls only later roles
DATASTORES = (("postgresql", "pg", 10), ("mysql", "mysql", 4), ("redis", "redis", 16))
PORTS = {"http": 8000, "postgresql": 5432, "mysql": 3306, "redis": 6379}
EXTERNAL_PEERS = ("151.101.1.69:443", "52.94.236.248:443", "142.250.74.110:443",
                  "104.18.32.7:443", "3.33.152.147:443", "18.165.83.22:443")  # fmt: skip
EXTERNAL_CALLERS = ("payments-svc", "email-worker", "sms-worker", "maps-api", "geo-svc", "ads-web")

BUSIEST_PER_MINUTE = 12_000  # the busiest service's requests per minute at the daily mean
SERVICE_ZIPF = 1.1
ENDPOINT_ZIPF = 1.5
DIURNAL_SWING = 0.5
# Services whose 500s jump for a while: (service, minutes before now it began, minutes, share).
INCIDENTS = (("checkout-api", 12, 10, 0.2), ("search-svc", 200, 40, 0.3), ("auth-api", 3 * 1440, 90, 0.25))

TRACES_PER_MINUTE = 8  # request paths sampled whole (every span, client and server) ...
TRACE_HOURS = 24  # ... over the sample retention
CALL_CHANCE = 0.5  # each dependency is called by a given request with this chance
MAX_DEPTH = 4
ERROR_SAMPLE_SHARE = 0.3  # 500 rows of the last day that also left a failing request sample

EXACT_COUNTS = 20  # histograms of up to this many requests are drawn one request at a time ...
COUNT_STEP = 1.1  # ... larger ones from the distribution, their counts rounded to steps of 10 %
VARIANTS = 2  # different draws kept per (profile, count), so rows are not all alike
BATCH_ROWS = 20_000

MINUTE = timedelta(minutes=1)


# --- Django --------------------------------------------------------------------------------------


def setup_django(db_path: Path) -> None:
    """Point Django at `db_path` (unless DATABASE_URL names another database) and set it up."""
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{db_path}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "obsweb.settings")
    import django

    django.setup()


def marker_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".json")


def ensure(db_path: Path, days: int = DAYS) -> dict:
    """The marker of the data in the database, generating it first when there is none."""
    from django.core.management import call_command
    from django.db import connection

    marker = marker_path(db_path)
    if marker.exists():
        call_command("migrate", verbosity=0)  # migrations added since: new indexes, new columns
        return json.loads(marker.read_text())

    if connection.vendor == "sqlite":
        connection.close()
        for stale in db_path.parent.glob(db_path.name + "*"):  # an interrupted run: start over
            stale.unlink()
        db_path.parent.mkdir(parents=True, exist_ok=True)
    meta = generate(days)
    marker.write_text(json.dumps(meta, indent=2))
    return meta


# --- the fleet -----------------------------------------------------------------------------------


@dataclass
class Latency:
    """A log-normal latency: half the requests take less than `median_ns`."""

    median_ns: float
    sigma: float


@dataclass
class ServicePlan:
    name: str
    protocol: str
    role: str
    domain: str
    hosts: list[int]
    port: int
    per_minute: float = 0.0
    failing: float = 0.0  # share of requests answered 500 (HTTP) or with an error
    external: bool = False
    endpoints: list["EndpointPlan"] = field(default_factory=list)
    callees: list["EdgePlan"] = field(default_factory=list)
    id: int = 0


@dataclass
class EndpointPlan:
    service: ServicePlan
    fields: dict  # Endpoint model fields: method and route, or operation, target and query
    share: float
    latency: Latency
    not_found: float
    request_bytes: int
    response_bytes: int
    profile: int = 0  # index of its histogram pool
    id: int = 0

    @property
    def per_minute(self) -> float:
        return self.service.per_minute * self.share


@dataclass
class EdgePlan:
    source: ServicePlan
    target: ServicePlan
    protocol: str
    per_minute: float
    latency: Latency
    bytes_per_call: int
    profile: int = 0


@dataclass
class Fleet:
    hosts: list[str]
    services: list[ServicePlan]
    edges: list[EdgePlan]
    profiles: list[Latency]  # one histogram pool each: every endpoint and every edge

    @property
    def endpoints(self) -> list[EndpointPlan]:
        return [e for s in self.services for e in s.endpoints]

    def named(self, name: str) -> ServicePlan:
        return next(s for s in self.services if s.name == name)


def plan_fleet(rng: random.Random) -> Fleet:
    hosts = [f"node-{i + 1:02d}" for i in range(HOST_COUNT)]
    services = _http_services(rng) + _datastores(rng)
    for index, service in enumerate(services):
        service.port = PORTS[service.protocol] + index
    _rank_traffic(services, rng)
    for service in services:
        service.endpoints = _endpoints(service, rng)
    externals = [
        ServicePlan(name, "", "external", "", [], int(name.rsplit(":", 1)[1]), external=True)
        for name in EXTERNAL_PEERS
    ]
    edges = _call_graph(services, externals, rng)
    fleet = Fleet(hosts, services + externals, edges, [])
    for item in [*fleet.endpoints, *edges]:
        item.profile = len(fleet.profiles)
        fleet.profiles.append(item.latency)
    return fleet


def _http_services(rng: random.Random) -> list[ServicePlan]:
    services = []
    for domain in DOMAINS:
        for role in HTTP_ROLES:
            hosts = rng.sample(range(HOST_COUNT), rng.randint(1, 3))
            failing = rng.choice((0.02, 0.03)) if rng.random() < 0.05 else rng.uniform(0.0002, 0.004)
            services.append(ServicePlan(f"{domain}-{role}", "http", role, domain, hosts, 0, failing=failing))
    return services


def _datastores(rng: random.Random) -> list[ServicePlan]:
    stores, domains = [], iter(DOMAINS)
    for protocol, prefix, count in DATASTORES:
        for _ in range(count):
            domain = next(domains)
            host = [rng.randrange(HOST_COUNT)]
            stores.append(
                ServicePlan(f"{prefix}-{domain}", protocol, "store", domain, host, 0, failing=0.0005)
            )
    return stores


def _rank_traffic(services: list[ServicePlan], rng: random.Random) -> None:
    """Busier kinds of service rank higher more often: the front doors and the caches."""
    bias = {"gateway": 3.0, "web": 2.0, "api": 2.0, "svc": 1.5, "worker": 0.7, "store": 1.5}
    weights = {s.name: rng.random() * (3.0 if s.protocol == "redis" else bias[s.role]) for s in services}
    for rank, service in enumerate(sorted(services, key=lambda s: -weights[s.name]), start=1):
        service.per_minute = BUSIEST_PER_MINUTE / rank**SERVICE_ZIPF


def _endpoints(service: ServicePlan, rng: random.Random) -> list[EndpointPlan]:
    weights = [1 / (j + 1) ** ENDPOINT_ZIPF for j in range(ENDPOINTS_PER_SERVICE)]
    shares = [w / sum(weights) for w in weights]
    identities = {
        "http": _routes,
        "postgresql": _sql_queries,
        "mysql": _sql_queries,
        "redis": _redis_commands,
    }[service.protocol](service.domain)
    rng.shuffle(identities)
    endpoints = []
    for identity, share in zip(identities, shares, strict=True):
        fields = {"protocol": service.protocol, **identity}
        if service.protocol == "http":
            latency = Latency(math.exp(rng.uniform(math.log(3e6), math.log(120e6))), rng.uniform(0.35, 0.8))
            not_found = rng.uniform(0.002, 0.03) if "{id}" in fields["route"] else 0.001
            sizes = (rng.randint(200, 1500), rng.randint(400, 30_000))
        elif service.protocol == "redis":
            latency = Latency(math.exp(rng.uniform(math.log(5e4), math.log(5e5))), rng.uniform(0.3, 0.6))
            not_found, sizes = 0.0, (rng.randint(40, 200), rng.randint(10, 2000))
        else:
            latency = Latency(math.exp(rng.uniform(math.log(2e5), math.log(20e6))), rng.uniform(0.4, 0.9))
            not_found, sizes = 0.0, (rng.randint(80, 600), rng.randint(50, 20_000))
        endpoints.append(EndpointPlan(service, fields, share, latency, not_found, *sizes))
    return endpoints


def _routes(domain: str) -> list[dict]:
    things = f"/api/v1/{domain}"
    return [
        {"method": method, "route": route}
        for method, route in (
            ("GET", things),
            ("GET", f"{things}/{{id}}"),
            ("POST", things),
            ("PUT", f"{things}/{{id}}"),
            ("DELETE", f"{things}/{{id}}"),
            ("GET", f"{things}/{{id}}/history"),
            ("GET", f"{things}/search"),
            ("POST", f"{things}/{{id}}/actions"),
            ("GET", "/api/v1/session"),
            ("GET", "/static/{path}"),
        )
    ]


def _sql_queries(domain: str) -> list[dict]:
    items, events = f"{domain}_items", f"{domain}_events"
    queries = [
        ("SELECT", domain, f"SELECT id, status, total, created_at FROM {domain} WHERE id = ?"),
        ("SELECT", domain, f"SELECT * FROM {domain} WHERE user_id = ? ORDER BY created_at DESC LIMIT ?"),
        ("SELECT", items, f"SELECT i.* FROM {items} i WHERE i.parent_id IN (?, ?, ?)"),
        ("INSERT", domain, f"INSERT INTO {domain} (user_id, status, total) VALUES (?, ?, ?) RETURNING id"),
        ("UPDATE", domain, f"UPDATE {domain} SET status = ?, updated_at = now() WHERE id = ?"),
        ("INSERT", events, f"INSERT INTO {events} (parent_id, kind, payload) VALUES (?, ?, ?)"),
        ("SELECT", domain, f"SELECT count(*) FROM {domain} WHERE status = ? AND created_at > ?"),
        ("DELETE", items, f"DELETE FROM {items} WHERE parent_id = ? AND id = ?"),
        ("SELECT", events, f"SELECT kind, count(*) FROM {events} WHERE created_at > ? GROUP BY kind"),
        ("UPDATE", items, f"UPDATE {items} SET quantity = quantity + ? WHERE id = ?"),
    ]
    return [_query_endpoint(operation, target, text) for operation, target, text in queries]


def _redis_commands(domain: str) -> list[dict]:
    commands = ("GET ?", "SET ? ? EX ?", "MGET ? ? ?", "HGETALL ?", "HSET ? ? ?", "EXPIRE ? ?",
                "DEL ?", "INCR ?", "ZADD ? ? ?", "ZRANGE ? ? ?")  # fmt: skip
    return [_query_endpoint(text.split()[0], "", text) for text in commands]


def _query_endpoint(operation: str, target: str, text: str) -> dict:
    from obsweb.telemetry.aggregate import query_hash

    return {
        "operation": operation,
        "target": target,
        "query": text,
        "query_hash": query_hash(text),
        "query_summary": f"{operation} {target}".strip() if target else "",
    }


def _call_graph(services: list[ServicePlan], externals: list[ServicePlan], rng) -> list[EdgePlan]:
    """Each HTTP service calls 2-4 others: later roles (its own domain first) and datastores."""
    http = [s for s in services if s.protocol == "http"]
    stores = [s for s in services if s.role == "store"]
    rank = {role: i for i, role in enumerate(HTTP_ROLES)}
    calls: list[tuple[ServicePlan, ServicePlan]] = []
    for caller in http:
        later = [s for s in http if rank[s.role] > rank[caller.role]]
        own = [s for s in later if s.domain == caller.domain][:2]
        wanted = rng.randint(2, 4)
        picked = own + rng.sample(stores, 1 if caller.role in ("svc", "worker") else 0)
        others = [s for s in later + stores if s not in picked]
        picked += rng.sample(others, max(0, min(wanted - len(picked), len(others))))
        calls += [(caller, callee) for callee in picked]
    by_name = {s.name: s for s in services}
    calls += [(by_name[caller], peer) for caller, peer in zip(EXTERNAL_CALLERS, externals, strict=True)]
    return _edges(calls, rng)


def _edges(calls, rng: random.Random) -> list[EdgePlan]:
    """Callers share 90 % of a callee's traffic (the rest comes from clients not seen here)."""
    weights = [rng.uniform(0.2, 1.0) for _ in calls]
    incoming: dict[str, float] = {}
    for (_, callee), w in zip(calls, weights, strict=True):
        incoming[callee.name] = incoming.get(callee.name, 0) + w
    edges = []
    for (caller, callee), w in zip(calls, weights, strict=True):
        if callee.external:
            rate, protocol = caller.per_minute * rng.uniform(0.05, 0.3), "tcp"
            latency = Latency(math.exp(rng.uniform(math.log(30e6), math.log(300e6))), 0.5)
        else:
            rate, protocol = 0.9 * callee.per_minute * w / incoming[callee.name], callee.protocol
            median = math.exp(sum(math.log(e.latency.median_ns) * e.share for e in callee.endpoints))
            latency = Latency(median * 1.1, 0.6)
        edges.append(EdgePlan(caller, callee, protocol, rate, latency, rng.randint(500, 20_000)))
        caller.callees.append(edges[-1])
    return edges


# --- histograms ----------------------------------------------------------------------------------


class HistogramPool:
    """Latency histograms of n requests for one profile, as the stored JSON text, reused.

    Drawing every request of every row would take an hour; a few draws per (count, variant)
    keep the rows varied at a fraction of the cost.
    """

    def __init__(self, latency: Latency, rng: random.Random):
        self.latency = latency
        self.rng = rng
        self.built: dict[tuple[int, int], tuple[int, str, int]] = {}
        self.buckets = _buckets(latency)  # (key, probability, representative ns)
        self.mode = max(self.buckets, key=lambda bucket: bucket[1])[0]

    def get(self, n: int) -> tuple[int, str, int]:
        """(count, histogram JSON, duration sum in ns); count is n rounded to the pool's steps."""
        count = _rounded_count(n)
        key = (count, self.rng.randrange(VARIANTS))
        built = self.built.get(key)
        if built is None:
            hist, duration = self._drawn(count) if count <= EXACT_COUNTS else self._spread(count)
            built = self.built[key] = (count, json.dumps(hist), int(duration))
        return built

    def _drawn(self, count: int) -> tuple[dict, float]:
        """(histogram, duration sum) of `count` requests drawn one by one."""
        hist: dict = {}
        mu, durations = math.log(self.latency.median_ns), 0.0
        for _ in range(count):
            duration = self.rng.lognormvariate(mu, self.latency.sigma)
            histogram.add(hist, duration)
            durations += duration
        return hist, durations

    def _spread(self, count: int) -> tuple[dict, float]:
        """(histogram, duration sum) of `count` requests spread over the buckets by their
        probability, rounded at random."""
        hist, placed, durations, draw = {}, 0, 0.0, self.rng.random
        for key, mass, representative in self.buckets:
            expected = count * mass
            n = int(expected)
            n += draw() < expected - n
            if n:
                hist[key] = n
                placed += n
                durations += n * representative
        hist[self.mode] = hist.get(self.mode, 0) + count - placed  # what rounding left over or under
        return hist, durations


def _buckets(latency: Latency) -> list[tuple[str, float, float]]:
    """(bucket key, probability, representative) over +-3.5 sigma of a log-normal latency.

    Bucket b holds the durations in (GAMMA**(b-1), GAMMA**b] (obsweb.telemetry.histogram).
    """
    log_gamma = math.log(histogram.GAMMA)
    mu, sigma = math.log(latency.median_ns), latency.sigma

    def below(bucket):
        return 0.5 * (1 + math.erf((bucket * log_gamma - mu) / (sigma * math.sqrt(2))))

    low = math.floor((mu - 3.5 * sigma) / log_gamma)
    high = math.ceil((mu + 3.5 * sigma) / log_gamma)
    return [(str(b), below(b) - below(b - 1), histogram.representative(b)) for b in range(low, high + 1)]


def _rounded_count(n: int) -> int:
    if n <= EXACT_COUNTS:
        return n
    steps = round(math.log(n / EXACT_COUNTS) / math.log(COUNT_STEP))
    return round(EXACT_COUNTS * COUNT_STEP**steps)


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _binomial(rng: random.Random, n: int, p: float) -> int:
    return min(n, _poisson(rng, n * p)) if p > 0 else 0


# --- time ----------------------------------------------------------------------------------------


def _minutes(now: datetime, days: int) -> list[tuple[datetime, int]]:
    """(minute, how many minutes of traffic its rows carry), oldest first, up to now's minute."""
    last = now.replace(second=0, microsecond=0)
    dense_from = last - timedelta(hours=DENSE_HOURS) + MINUTE
    first = last - timedelta(days=days) + MINUTE
    minutes = []
    minute = first
    while minute < dense_from:
        if (minute - first) // MINUTE % SPARSE_EVERY == SPARSE_EVERY - 1:
            minutes.append((minute, SPARSE_EVERY))
        minute += MINUTE
    while minute <= last:
        minutes.append((minute, 1))
        minute += MINUTE
    return minutes


def _diurnal(minute: datetime) -> float:
    hour = minute.hour + minute.minute / 60
    return 1 + DIURNAL_SWING * math.sin(2 * math.pi * (hour - 9) / 24)


def _incident_share(service: ServicePlan, minute: datetime, now: datetime) -> float:
    for name, began, lasted, share in INCIDENTS:
        start = now.replace(second=0, microsecond=0) - began * MINUTE
        if name == service.name and start <= minute < start + lasted * MINUTE:
            return share
    return service.failing


# --- writing -------------------------------------------------------------------------------------


def _insert(model, field_names: list[str], rows: list[tuple]) -> None:
    """INSERT rows whose values are already what the database driver takes (JSON as text).

    Not obsweb.telemetry.bulk.insert_rows: it prepares every value through its field, and
    serializing millions of histograms again would double the generation time.
    """
    from django.db import connection

    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(model._meta.get_field(name).column) for name in field_names)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # COPY: Django's psycopg cursors bind client-side, a round trip per executemany row.
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            placeholders = ", ".join(["%s"] * len(field_names))
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", rows)


def _insert_objects(model, rows: list[dict]) -> None:
    """Insert dicts of field values with bulk.insert_rows; fields a dict lacks get their default,
    so rows survive fields added to the model later."""
    from obsweb.telemetry.bulk import insert_rows

    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    names = [f.name for f in fields]
    defaults = [f.get_default() for f in fields]
    values = [tuple(row.get(n, d) for n, d in zip(names, defaults, strict=True)) for row in rows]
    insert_rows(model, names, values)


class Writer:
    """Rows of one table in batches of BATCH_ROWS, each batch in its own transaction."""

    def __init__(self, model, field_names: list[str]):
        self.model, self.field_names, self.rows, self.written = model, field_names, [], 0

    def add(self, row: tuple) -> None:
        self.rows.append(row)
        if len(self.rows) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        from django.db import transaction

        if not self.rows:
            return
        with transaction.atomic():
            _insert(self.model, self.field_names, self.rows)
        self.written += len(self.rows)
        self.rows = []


class deferred_indexes:
    """Drop a table's plain (non-unique) indexes while it is bulk-loaded, and build them again.

    Keeping four B-trees in step row by row halves SQLite's insert rate; one sorted build per
    index at the end is quicker. The definitions are read from the database itself.
    """

    def __init__(self, model):
        self.table = model._meta.db_table
        self.definitions: list[str] = []

    def __enter__(self):
        from django.db import connection

        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                cursor.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = %s "
                    "AND sql IS NOT NULL AND sql NOT LIKE 'CREATE UNIQUE%%'",
                    [self.table],
                )
            else:
                cursor.execute(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s "
                    "AND indexdef NOT LIKE 'CREATE UNIQUE%%'",
                    [self.table],
                )
            found = cursor.fetchall()
            for name, _ in found:
                cursor.execute(f"DROP INDEX {connection.ops.quote_name(name)}")
        self.definitions = [definition for _, definition in found]
        return self

    def __exit__(self, *exc):
        from django.db import connection

        with connection.cursor() as cursor:
            for definition in self.definitions:
                cursor.execute(definition)
        return False


def _prepared_minutes(minutes) -> dict[datetime, object]:
    """Each minute as the database driver takes it, prepared once instead of once per row."""
    from django.db import connection

    from obsweb.telemetry.models import Rollup

    field = Rollup._meta.get_field("minute")
    return {minute: field.get_db_prep_save(minute, connection) for minute, _ in minutes}


def write_inventory(fleet: Fleet, now: datetime) -> None:
    """Hosts, services with their hosts, and endpoints; sets the plans' ids."""
    from obsweb.fleet.models import Host
    from obsweb.telemetry.models import Endpoint, Service

    probes = {p: {"desired": True, "actual": True, "error": None} for p in ("http", "tls", "tcp")}
    Host.objects.bulk_create(
        [
            Host(
                name=name,
                last_seen=now,
                agent_version="0.1.0",
                kernel="6.1.0-18-amd64",
                probes=probes,
                events_seen=10**9,
                events_per_s=3000.0,
            )  # fmt: skip
            for name in fleet.hosts
        ]
    )
    host_ids = dict(Host.objects.values_list("name", "id"))
    Service.objects.bulk_create(
        [
            Service(name=s.name, protocol=s.protocol, external=s.external, last_seen=now)
            for s in fleet.services
        ]
    )
    ids = dict(Service.objects.values_list("name", "id"))
    links = []
    for service in fleet.services:
        service.id = ids[service.name]
        links += [
            Service.hosts.through(service_id=service.id, host_id=host_ids[fleet.hosts[h]])
            for h in service.hosts
        ]
    Service.hosts.through.objects.bulk_create(links)
    Endpoint.objects.bulk_create(
        [Endpoint(service_id=e.service.id, **e.fields) for e in fleet.endpoints], batch_size=500
    )
    endpoint_ids = {
        (service_id, protocol, method, route, operation, query_hash): pk
        for pk, service_id, protocol, method, route, operation, query_hash in Endpoint.objects.values_list(
            "id", "service_id", "protocol", "method", "route", "operation", "query_hash"
        )
    }
    for e in fleet.endpoints:
        f = e.fields
        e.id = endpoint_ids[
            (e.service.id, e.service.protocol, f.get("method", ""), f.get("route", ""),
             f.get("operation", ""), f.get("query_hash", ""))
        ]  # fmt: skip


ROLLUP_FIELDS = ["minute", "endpoint", "service", "status_code", "count", "errors", "request_bytes",
                 "response_bytes", "duration_sum_ns", "histogram"]  # fmt: skip
EDGE_FIELDS = ["minute", "source", "target", "protocol", "count", "errors", "bytes", "duration_sum_ns",
               "histogram"]  # fmt: skip


def write_rollups(fleet, minutes, now, pools, rng) -> tuple[int, list]:
    """Rollup rows minute by minute; returns (rows, the 500 rows that left an error sample)."""
    from obsweb.telemetry.models import Rollup

    prepared = _prepared_minutes(minutes)
    writer, failures = Writer(Rollup, ROLLUP_FIELDS), []
    sample_from = now - timedelta(hours=TRACE_HOURS)
    with deferred_indexes(Rollup):
        for minute, spans in minutes:
            weight = _diurnal(minute) * spans
            failing = {s.name: _incident_share(s, minute, now) for s in fleet.services}
            for endpoint in fleet.endpoints:
                n = _poisson(rng, endpoint.per_minute * weight)
                for status, k in _statuses(endpoint, n, failing[endpoint.service.name], rng):
                    count, hist, duration = pools[endpoint.profile].get(k)
                    errors = count if status >= 500 else _errors(endpoint, count, failing, rng)
                    writer.add(
                        (prepared[minute], endpoint.id, endpoint.service.id, status, count, errors,
                         count * endpoint.request_bytes, count * endpoint.response_bytes, duration, hist)
                    )  # fmt: skip
                    if status >= 500 and minute >= sample_from and rng.random() < ERROR_SAMPLE_SHARE:
                        failures.append((minute, endpoint))
        writer.flush()
    return writer.written, failures


def _statuses(endpoint: EndpointPlan, n: int, failing: float, rng) -> list[tuple[int, int]]:
    """(status code, requests) with requests > 0: HTTP 200/404/500, other protocols status 0."""
    if n == 0:
        return []
    if endpoint.service.protocol != "http":
        return [(0, n)]
    failed = _binomial(rng, n, failing)
    missing = _binomial(rng, n - failed, endpoint.not_found)
    return [(code, k) for code, k in ((200, n - failed - missing), (404, missing), (500, failed)) if k]


def _errors(endpoint: EndpointPlan, count: int, failing: dict, rng) -> int:
    if endpoint.service.protocol == "http":
        return 0  # only 5xx count as errors
    return _binomial(rng, count, failing[endpoint.service.name])


def write_edges(fleet, minutes, pools, rng) -> int:
    from obsweb.telemetry.models import Edge

    prepared = _prepared_minutes(minutes)
    writer = Writer(Edge, EDGE_FIELDS)
    with deferred_indexes(Edge):
        for minute, spans in minutes:
            weight = _diurnal(minute) * spans
            for edge in fleet.edges:
                n = _poisson(rng, edge.per_minute * weight)
                if n:
                    count, hist, duration = pools[edge.profile].get(n)
                    errors = _binomial(rng, count, edge.target.failing)
                    writer.add(
                        (prepared[minute], edge.source.id, edge.target.id, edge.protocol, count, errors,
                         count * edge.bytes_per_call, duration, hist)
                    )  # fmt: skip
        writer.flush()
    return writer.written


# --- request samples -----------------------------------------------------------------------------


@dataclass
class Trace:
    """One sampled request path being drawn: its spans as RequestSample field dicts."""

    fleet: Fleet
    rng: random.Random
    trace_id: str
    spans: list[dict] = field(default_factory=list)

    def span_id(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"

    def serve(self, service: ServicePlan, start_ns: int, parent: dict | None, depth: int) -> int:
        """A server span of `service` from `start_ns` with the calls it makes; returns its duration."""
        rng = self.rng
        endpoint = rng.choices(service.endpoints, weights=[e.share for e in service.endpoints])[0]
        own = rng.lognormvariate(math.log(endpoint.latency.median_ns), endpoint.latency.sigma)
        span_id = self.span_id()
        clock = start_ns + int(own * 0.2)
        for edge in service.callees:
            if depth < MAX_DEPTH and not edge.target.external and rng.random() < CALL_CHANCE:
                clock += self.call(edge, clock, span_id, depth)
        duration = clock - start_ns + int(own * 0.8)
        failed = rng.random() < service.failing * 5  # sampled paths lean towards the interesting ones
        status = (500 if failed else 200) if service.protocol == "http" else 0
        record = _server_record(self.fleet, endpoint, start_ns, duration, status, failed, rng)
        if parent is not None:  # the far end of the caller's connection
            record |= {"client.address": parent["address"], "client.port": parent["port"]}
        self.spans.append(
            _sample(record, service, endpoint, self.trace_id, span_id, parent["span_id"] if parent else "")
        )
        self.spans[-1]["connection"] = parent["connection"] if parent else ""
        return duration

    def call(self, edge: EdgePlan, start_ns: int, parent_span_id: str, depth: int) -> int:
        """A client span of edge.source calling edge.target, and what the target did for it."""
        caller, callee = edge.source, edge.target
        caller_host = self.fleet.hosts[caller.hosts[0]]
        address, port = _ip(caller.hosts[0]), self.rng.randint(32768, 60999)
        connection = f"{address}:{port}>{_ip(callee.hosts[0])}:{callee.port}"  # paths.connection_key
        client = {"span_id": self.span_id(), "connection": connection, "address": address, "port": port}
        served = self.serve(callee, start_ns + 100_000, client, depth + 1)
        server = self.spans[-1]
        duration = served + 200_000
        record = dict(server["attributes"])
        record.update(
            {
                "host": caller_host, "ts": start_ns, "service.name": caller.name, "span.kind": "client",
                "duration_ns": duration, "span_id": client["span_id"],
                "parent_span_id": parent_span_id, "peer.service": callee.name,
            }
        )  # fmt: skip
        self.spans.append(
            {**server, "ts": _datetime(start_ns), "service": caller.id, "endpoint": None, "host": caller_host,
             "span_kind": "client", "duration_ns": duration, "span_id": client["span_id"],
             "parent_span_id": parent_span_id, "attributes": record}
        )  # fmt: skip
        return duration


def _ip(host: int) -> str:
    return f"10.0.0.{host + 10}"


def _datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def _server_record(fleet, endpoint, start_ns, duration, status, failed, rng) -> dict:
    """The request record as the probes send it (DESIGN.md: Records), already redacted."""
    service = endpoint.service
    host = service.hosts[0]
    record = {
        "kind": "request", "host": fleet.hosts[host], "ts": start_ns, "service.name": service.name,
        "span.kind": "server", "server.address": _ip(host), "server.port": service.port,
        "client.address": _ip(rng.randrange(HOST_COUNT)), "client.port": rng.randint(32768, 60999),
        "network.protocol.name": service.protocol, "error": failed, "duration_ns": duration,
        "request.bytes": endpoint.request_bytes, "response.bytes": endpoint.response_bytes,
        "tls": False, "pid": 1000 + host, "tid": 1000 + host, "peer.service": None,
    }  # fmt: skip
    fields = endpoint.fields
    if service.protocol == "http":
        route = fields["route"]
        record |= {
            "http.request.method": fields["method"], "http.route": route,
            "url.path": route.replace("{id}", str(rng.randint(1, 99999))).replace("{path}", "app.js"),
            "http.response.status_code": status, "user_agent.original": "python-requests/2.32",
        }  # fmt: skip
    else:
        record |= {
            "db.system": service.protocol, "db.operation.name": fields["operation"],
            "db.collection.name": fields["target"], "db.query.text": fields["query"],
            "db.query.summary": fields["query_summary"],
        }  # fmt: skip
        if failed:
            record["error.type"] = "57014" if service.protocol != "redis" else "ERR"
    return record


def _sample(record: dict, service: ServicePlan, endpoint, trace_id: str, span_id: str, parent: str):
    record |= {"trace_id": trace_id, "span_id": span_id, "parent_span_id": parent}
    return {
        "ts": _datetime(record["ts"]),
        "service": service.id,
        "endpoint": endpoint.id if endpoint else None,
        "host": record["host"],
        "span_kind": record["span.kind"],
        "status_code": record.get("http.response.status_code", 0),
        "error": record["error"],
        "duration_ns": record["duration_ns"],
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "connection": "",
        "attributes": record,
    }


def write_samples(fleet: Fleet, now: datetime, failures: list, rng: random.Random) -> int:
    """Whole request paths from the front doors, and lone failing requests behind the 500 rows."""
    from django.db import transaction

    from obsweb.telemetry.models import RequestSample

    doors = [s for s in fleet.services if s.role in ("gateway", "web")]
    weights = [s.per_minute for s in doors]
    start = now.replace(second=0, microsecond=0) - timedelta(hours=TRACE_HOURS)
    rows = []
    for minute in range(TRACE_HOURS * 60):
        for _ in range(TRACES_PER_MINUTE):
            trace = Trace(fleet, rng, f"{rng.getrandbits(128):032x}")
            begins = start + minute * MINUTE + timedelta(seconds=rng.uniform(0, 60))
            trace.serve(rng.choices(doors, weights=weights)[0], int(begins.timestamp() * 1e9), None, 0)
            rows += trace.spans
    for minute, endpoint in failures:
        begins = int((minute + timedelta(seconds=rng.uniform(0, 60))).timestamp() * 1e9)
        duration = int(rng.lognormvariate(math.log(endpoint.latency.median_ns), endpoint.latency.sigma))
        record = _server_record(fleet, endpoint, begins, duration, 500, True, rng)
        rows.append(_sample(record, endpoint.service, endpoint, f"{rng.getrandbits(128):032x}", "", ""))
        rows[-1]["span_id"] = rows[-1]["attributes"]["span_id"] = f"{rng.getrandbits(64):016x}"
    rows.sort(key=lambda row: row["ts"])
    with deferred_indexes(RequestSample):
        for first in range(0, len(rows), BATCH_ROWS):
            with transaction.atomic():
                _insert_objects(RequestSample, rows[first : first + BATCH_ROWS])
    return len(rows)


# --- all of it -----------------------------------------------------------------------------------


def _tune_for_bulk_load() -> None:
    from django.db import connection

    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous = OFF")  # a crash means regenerating anyway
            cursor.execute("PRAGMA cache_size = -1000000")  # 1 GB: the indexes stay in memory


def _finish_bulk_load() -> None:
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # what autovacuum would have done by the time anyone looks
    else:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def generate(days: int = DAYS) -> dict:
    """Fill the (migrated, empty) database; returns what the marker file records."""
    from django.core.management import call_command
    from django.db import connection

    from obsweb.telemetry.models import Edge, Endpoint, RequestSample, Rollup, Service

    began = time.monotonic()
    call_command("migrate", verbosity=0)
    if Service.objects.exists():
        raise SystemExit(f"the database {connection.settings_dict['NAME']} is not empty; give an empty one")
    _tune_for_bulk_load()
    rng = random.Random(SEED)
    now = datetime.now(UTC)
    fleet = plan_fleet(rng)
    write_inventory(fleet, now)
    pools = [HistogramPool(latency, rng) for latency in fleet.profiles]
    minutes = _minutes(now, days)
    rollup_rows, failures = _timed("rollups", write_rollups, fleet, minutes, now, pools, rng)
    _timed("edges", write_edges, fleet, minutes, pools, rng)
    sample_rows = _timed("request samples", write_samples, fleet, now, failures, rng)
    _finish_bulk_load()
    busy = max((s for s in fleet.services if s.protocol == "http"), key=lambda s: s.per_minute)
    database = max((s for s in fleet.services if s.protocol == "postgresql"), key=lambda s: s.per_minute)
    meta = {
        "now": now.isoformat(),
        "days": days,
        "density": DENSITY,
        "database": connection.vendor,
        "busy_service": busy.name,
        "database_service": database.name,
        "rows": {
            "hosts": len(fleet.hosts),
            "services": Service.objects.count(),
            "endpoints": Endpoint.objects.count(),
            "rollups": Rollup.objects.count(),
            "edges": Edge.objects.count(),
            "request_samples": RequestSample.objects.count(),
        },
        "seconds": round(time.monotonic() - began, 1),
    }
    assert meta["rows"]["rollups"] == rollup_rows and meta["rows"]["request_samples"] == sample_rows
    return meta


def _timed(what: str, write, *args):
    began = time.monotonic()
    result = write(*args)
    print(f"  {what}: {time.monotonic() - began:.0f} s", flush=True)
    return result


def describe(meta: dict) -> str:
    rows = ", ".join(f"{n:,} {table}" for table, n in meta["rows"].items())
    return (
        f"data: {rows}; generated in {meta['seconds']:.0f} s ({meta['database']}), "
        f"now = {meta['now']}\ndensity: {meta['density']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", type=Path, default=DEFAULT_DB, help="SQLite file (marker if DATABASE_URL)")
    parser.add_argument("--days", type=int, default=DAYS)
    args = parser.parse_args()
    setup_django(args.db)
    if marker_path(args.db).exists():
        print(f"{args.db} already holds the data (remove {marker_path(args.db)} to generate again)")
    print(describe(ensure(args.db, args.days)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
