"""Server time of every dashboard page and API endpoint over 7 days of rollups for 200 services.

Builds the database once with bench/rollup_data.py (the marker file next to it says the data
is there, so reruns skip generation), then requests every named URL of the project (the
dashboard's, the API's, the incidents'; not the admin's or the login's) that answers GET, with
arguments for the busiest HTTP service and the busiest PostgreSQL one, in-process with Django's
test client, as a logged-in staff user (pages) or with `Authorization: Token` (API), for the
windows -15m, -1h, -24h and -7d: one warm-up (which also counts the SQL queries), then up to
--reps timed runs while the page and window have taken under CELL_BUDGET_S (a page slower than
that runs once; one slower than --give-up-s is not requested at its longer windows, so the
bench stays within minutes). It prints the median and p90 server time, the query count and the
300 ms budget (DESIGN.md: Performance budgets) of each, and writes bench/results/dashboard.json.

    .venv/bin/python bench/dashboard.py [--db PATH] [--reps N] [--windows -15m,-1h] [--give-up-s S]
    DATABASE_URL=postgres://... .venv/bin/python bench/dashboard.py --db .local/bench-pg

The clock is the data's: `timezone.now()` answers when the data was generated plus the time
since the bench started, so a rerun days later measures the same windows over the same rows.
The test client keeps one database connection open, where the web server would open one per
request with SQLite (CONN_MAX_AGE=0): about a millisecond it does not count.
"""

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from itertools import product
from pathlib import Path
from unittest import mock
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rollup_data  # noqa: E402  (bench/ is not a package)

RESULTS = Path(__file__).resolve().parent / "results"
WINDOWS = ("-15m", "-1h", "-24h", "-7d")
WINDOWLESS = {"healthz", "api-schema"}  # answer the same whatever the window
DJANGO_OWN = ("admin/", "accounts/")  # patterns not measured: Django's admin and login pages
BUDGET_MS = 300  # DESIGN.md: Performance budgets
CELL_BUDGET_S = 4.0  # stop repeating one page and window after this long (a slow one runs once)
BENCH_USER = "bench-staff"  # staff: the audit pages are staff-only, and staff see every page
NOT_A_PAGE = 405  # a pattern that only takes POST or PATCH: skipped, not measured


@dataclass
class Page:
    name: str  # the URL pattern's name
    label: str  # what the table shows: the path with the subject's placeholders
    url: str
    params: dict  # query parameters besides the window
    api: bool
    windowed: bool


@dataclass
class Measurement:
    page: str
    window: str
    url: str
    status: int
    queries: int
    runs: int
    median_ms: float
    p90_ms: float

    @property
    def within_budget(self) -> bool:
        return self.status == 200 and self.p90_ms <= BUDGET_MS


# --- what to request -----------------------------------------------------------------------------


def subjects(meta: dict) -> dict:
    """The names and ids the parametrized pages are requested with (lists: one request each)."""
    from django.db.models import Count, Sum

    from obsweb.fleet.models import Host
    from obsweb.telemetry.models import Endpoint, RequestSample

    busy, database = meta["busy_service"], meta["database_service"]
    endpoint = (
        Endpoint.objects.filter(service__name=busy)
        .annotate(requests=Sum("rollups__count"))
        .order_by("-requests")
        .values_list("id", flat=True)
        .first()
    )
    # The widest recent request path through the busy service: the one with the most spans.
    roots = RequestSample.objects.filter(service__name=busy, parent_span_id="", span_kind="server")
    recent = list(roots.order_by("-ts").values_list("trace_id", flat=True)[:200])
    trace = (
        RequestSample.objects.filter(trace_id__in=recent)
        .values("trace_id")
        .annotate(spans=Count("id"))
        .order_by("-spans")
        .values_list("trace_id", flat=True)
        .first()
    )
    return {
        "services": [busy, database],
        "busy_service": [busy],
        "endpoint_id": [endpoint],
        "trace_id": [trace] if trace else [],
        "host": list(Host.objects.values_list("name", flat=True)[:1]),
        # Incidents and reports come from alert evaluation, which the generator does not run:
        # their pages are measured when the database happens to hold one.
        "incident_id": _first_id("incidents", "Incident"),
        "rule_id": _first_id("incidents", "AlertRule"),
        "report_id": _first_id("incidents", "Report"),
    }


def _first_id(app: str, model: str) -> list[int]:
    from django.apps import apps

    try:
        return list(apps.get_model(app, model).objects.order_by("pk").values_list("pk", flat=True)[:1])
    except LookupError:
        return []


def pages(found: dict) -> tuple[list[Page], list[str]]:
    """Every named URL pattern of the project but Django's own (admin, accounts), with the
    arguments it takes, and the patterns skipped because no argument is known for them."""
    from django.urls import get_resolver

    listed, skipped = [], []
    for route, name, short_name, arguments in _patterns(get_resolver()):
        if route.startswith(DJANGO_OWN):
            continue
        requests = _arguments(route, arguments, found)
        if requests is None:
            skipped.append(f"{name} ({route}): no arguments known for it")
            continue
        listed += [_page(name, short_name, route, kwargs, found) for kwargs in requests]
    return listed, skipped


def _patterns(resolver, prefix: str = "", namespace: str = ""):
    """(route, name with its namespace, name, argument names) of every named pattern."""
    from django.urls import URLResolver

    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            inner = ":".join(part for part in (namespace, entry.namespace) if part)
            yield from _patterns(entry, route, inner)
        elif entry.name:
            name = f"{namespace}:{entry.name}" if namespace else entry.name
            yield route, name, entry.name, set(entry.pattern.converters)


def _arguments(route: str, names: set[str], found: dict) -> list[dict] | None:
    """The keyword arguments to request `route` with (one dict per request), None when unknown."""
    values = {}
    for name in sorted(names):
        if name == "name" and "hosts" in route:
            values[name] = found["host"]
        elif name == "name" and "endpoint_id" in names:
            values[name] = found["busy_service"]  # the endpoint is one of its own
        elif name == "name":
            values[name] = found["services"]
        else:
            values[name] = found.get(name, [])
        if not values[name]:
            return None
    return [dict(zip(values, combination, strict=True)) for combination in product(*values.values())]


def _page(name: str, short_name: str, route: str, kwargs: dict, found: dict) -> Page:
    from django.urls import reverse

    url = reverse(name, kwargs=kwargs)
    # The service page's request tables, as an API client would ask for them.
    params = {"service": found["services"][0]} if short_name == "api-requests" else {}
    label = f"{url}?{urlencode(params)}" if params else url
    windowed = short_name not in WINDOWLESS
    return Page(name, label, url, params, api=route.startswith("api/"), windowed=windowed)


def _url(page: Page, window: str | None) -> str:
    params = page.params | ({"since": window} if window else {})
    return f"{page.url}?{urlencode(params)}" if params else page.url


# --- measuring -----------------------------------------------------------------------------------


@contextmanager
def data_clock(now: datetime):
    """timezone.now() as if the bench ran right after the data was generated."""
    from django.utils import timezone

    started = time.monotonic()

    def clock():
        return now + timedelta(seconds=time.monotonic() - started)

    with mock.patch.object(timezone, "now", clock):
        yield


def clients():
    """(pages client logged in as a staff user, API client with that user's token)."""
    from django.contrib.auth.models import User
    from django.test import Client
    from rest_framework.authtoken.models import Token

    user, created = User.objects.get_or_create(username=BENCH_USER, defaults={"is_staff": True})
    if created:
        user.set_unusable_password()
        user.save()
    # localhost: an ALLOWED_HOSTS name, no test environment needed; a failing page answers 500.
    pages_client = Client(HTTP_HOST="localhost", raise_request_exception=False)
    pages_client.force_login(user)
    token, _ = Token.objects.get_or_create(user=user)  # what `manage.py apitoken` does
    api_client = Client(
        HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Token {token.key}", raise_request_exception=False
    )
    return pages_client, api_client


def measure(client, page: Page, window: str | None, url: str, reps: int) -> Measurement:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    started = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    warm_up = time.perf_counter() - started
    count = len(queries)  # now: the next request's request_started signal clears the log
    times = []
    while len(times) < reps and sum(times) + warm_up < CELL_BUDGET_S:
        began = time.perf_counter()
        client.get(url)
        times.append(time.perf_counter() - began)
    times = times or [warm_up]  # too slow to repeat: the warm-up is the one run
    return Measurement(
        page=page.label,
        window=window or "-",
        url=url,
        status=response.status_code,
        queries=count,
        runs=len(times),
        median_ms=round(1000 * statistics.median(times), 1),
        p90_ms=round(1000 * _p90(times), 1),
    )


def _p90(times: list[float]) -> float:
    """The nearest-rank 90th percentile: the slowest of up to 10 runs."""
    ordered = sorted(times)
    return ordered[max(0, -(-9 * len(ordered) // 10) - 1)]


def run(all_pages: list[Page], args, skipped: list[str]) -> list[Measurement]:
    """Each page at each window, shortest first; a page slower than --give-up-s at one window
    is not requested at the longer ones (it would only fail slower), and is listed in `skipped`."""
    pages_client, api_client = clients()
    results = []
    for page in all_pages:
        for window in args.windows.split(",") if page.windowed else (None,):
            client = api_client if page.api else pages_client
            result = measure(client, page, window, _url(page, window), args.reps)
            if result.status == NOT_A_PAGE:
                skipped.append(f"{page.name} ({page.url}): GET not allowed")
                break
            results.append(result)
            print(_row(result), flush=True)
            if args.give_up_s and result.median_ms > 1000 * args.give_up_s:
                skipped.append(f"{page.label}: longer windows than {window} (over {args.give_up_s} s)")
                break
    return results


# --- reporting -----------------------------------------------------------------------------------

HEADER = f"{'page':<52} {'window':>6} {'median ms':>10} {'p90 ms':>9} {'queries':>8} {'runs':>5}  budget"


def _row(m: Measurement) -> str:
    verdict = "pass" if m.within_budget else ("FAIL" if m.status == 200 else f"HTTP {m.status}")
    return (
        f"{m.page[:52]:<52} {m.window:>6} {m.median_ms:>10.1f} {m.p90_ms:>9.1f} {m.queries:>8} "
        f"{m.runs:>5}  {verdict}"
    )


def machine() -> dict:
    import django
    from django.db import connection

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("SELECT sqlite_version()" if connection.vendor == "sqlite" else "SHOW server_version")
        version = cursor.fetchone()[0]
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "database": f"{connection.vendor} {version}",
        "load_average": os.getloadavg(),  # other work on the machine makes every number slower
    }


def table_rows(results: list[Measurement]) -> list[dict]:
    """bench/run.py's rows: per window, how many pages answer within budget, and the slowest."""
    rows = []
    for window in dict.fromkeys(m.window for m in results):
        mine = [m for m in results if m.window == window]
        within = sum(m.within_budget for m in mine)
        slowest = max(mine, key=lambda m: m.p90_ms)
        rows.append(
            {
                "measure": f"dashboard pages, window {window}" if window != "-" else "dashboard, windowless",
                "config": "sqlite" if "sqlite" in machine()["database"] else "postgresql",
                "value": f"{within} of {len(mine)} within {BUDGET_MS} ms (p90); slowest {slowest.page} "
                f"{slowest.p90_ms:,.0f} ms",
                "spread": f"median of up to {max(m.runs for m in mine)} runs",
                "budget": f"< {BUDGET_MS} ms",
            }
        )
    return rows


def write_results(args, meta: dict, results: list[Measurement], skipped: list[str]) -> Path:
    from common import machine as common_machine

    over = [f"{m.page} {m.window}" for m in results if not m.within_budget]
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "dashboard.json"
    out.write_text(
        json.dumps(
            {
                "name": "dashboard",
                "machine": common_machine() | machine(),
                "table": table_rows(results),
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "data": meta,
                "budget_ms": BUDGET_MS,
                "results": [asdict(m) | {"within_budget": m.within_budget} for m in results],
                "skipped": skipped,
                "summary": {"measured": len(results), "over_budget": over},
            },
            indent=2,
        )
    )
    return out


def skip_without_data(args) -> int:
    """--quick does not spend minutes generating 7 days of rollups: it says so in the table."""
    args.out.mkdir(parents=True, exist_ok=True)
    note = "skipped: no data built yet (a full run builds it once, ~3-4 min, cached in .local/)"
    row = {"measure": "dashboard pages", "config": "", "value": note, "spread": "", "budget": ""}
    (args.out / "dashboard.json").write_text(json.dumps({"name": "dashboard", "table": [row]}, indent=2))
    print(note)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", type=Path, default=rollup_data.DEFAULT_DB, help="SQLite file, cached")
    parser.add_argument("--reps", type=int, default=5, help="timed runs after the warm-up")
    parser.add_argument("--windows", default=",".join(WINDOWS), help="comma-separated, shortest first")
    parser.add_argument(
        "--give-up-s", type=float, default=10.0, help="skip a page's longer windows past this (0: never)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 run per page at -15m, only over data already built"
    )
    args = parser.parse_args()
    if args.quick:
        args.reps, args.windows, args.give_up_s = 1, "-15m", 2.0
        if not rollup_data.marker_path(args.db).exists():
            return skip_without_data(args)

    rollup_data.setup_django(args.db)
    logging.getLogger("django.request").setLevel(logging.ERROR)  # 405s are expected
    warnings.filterwarnings("ignore", "No directory at")  # WhiteNoise: no collectstatic needed here
    meta = rollup_data.ensure(args.db)
    print(rollup_data.describe(meta))
    with data_clock(datetime.fromisoformat(meta["now"])):
        found = subjects(meta)
        all_pages, skipped = pages(found)
        print(f"\n{HEADER}")
        results = run(all_pages, args, skipped)
    for pattern in skipped:
        print(f"skipped {pattern}")
    over = [m for m in results if not m.within_budget]
    print(f"\n{len(results) - len(over)} of {len(results)} within {BUDGET_MS} ms")
    print(f"results: {write_results(args, meta, results, skipped)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
