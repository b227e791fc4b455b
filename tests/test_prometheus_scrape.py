"""A real Prometheus (Debian's /usr/bin/prometheus) scrapes a real obsweb web server on loopback.

Records go through the real ingest path (Redis stream, `manage.py ingest --once`), Prometheus runs
the sample deploy/prometheus/prometheus.yml with the test's address, token file and a 1 s interval,
and PromQL through its HTTP API must give back the request count and a p99 within the `le` bucket
that holds the true p99.
"""

import contextlib
import math
import random
import subprocess
import time
from pathlib import Path

import pytest
import redis
import requests
from django.core.management import call_command
from pytest_django.live_server_helper import LiveServer

from probes import schema
from tests.factories import now_ns, request
from tests.helpers import REPO, free_port, stop, wait_for_port

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
SAMPLE = REPO / "deploy" / "prometheus" / "prometheus.yml"
TOKEN = "scrape-test-token-0123456789abcdef"
WAIT_S = 20.0
BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
COUNT = 'sum(http_server_request_duration_seconds_count{service="shop-api"})'
SELECTOR = 'http_server_request_duration_seconds_bucket{service="shop-api"}'
BUCKETS = f"sum by (le) ({SELECTOR})"


def _binary(path: str) -> str:
    if not Path(path).exists():
        raise RuntimeError(f"{path} is not installed: run `make test` (APT_TEST installs prometheus)")
    return path


def config_for(web: str, token_file: Path, probes: str) -> str:
    """The sample config pointed at this test's servers, scraping every second."""
    text = SAMPLE.read_text()
    for sample, ours in [
        ("obsweb.example.internal:8000", web),
        ("/etc/prometheus/obsweb-metrics-token", str(token_file)),
        ('["host-a.example.internal:8080", "host-b.example.internal:8080"]', f'["{probes}"]'),
        ("scrape_interval: 15s", "scrape_interval: 1s"),
        ("scrape_timeout: 10s", "scrape_timeout: 1s"),
    ]:
        assert sample in text, f"{SAMPLE} no longer holds {sample!r}: update this test"
        text = text.replace(sample, ours)
    return text


@pytest.fixture
def web(transactional_db, redis_url, settings):
    """obsweb on a real loopback HTTP server, sharing the test database; ingest through `redis_url`."""
    settings.REDIS_URL = redis_url
    settings.OBSWEB_METRICS_TOKEN = TOKEN
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    redis.Redis.from_url(redis_url).flushdb()
    server = LiveServer("127.0.0.1:0")
    try:
        yield server.url.removeprefix("http://")
    finally:
        server.stop()


@contextlib.contextmanager
def running_prometheus(web: str, tmp: Path, token: str):
    """Prometheus of its own (temp config and storage, loopback only) scraping `web` with `token`;
    yields its base URL once ready, stops it after."""
    token_file = tmp / "token"
    token_file.write_text(token + "\n")
    config = tmp / "prometheus.yml"
    config.write_text(config_for(web, token_file, probes=f"127.0.0.1:{free_port()}"))
    port = free_port()
    args = [_binary(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}"]
    args += [f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    with open(tmp / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for_port(port, timeout=WAIT_S)
            _wait(lambda: requests.get(f"{base}/-/ready", timeout=2).ok, "Prometheus to be ready", base, tmp)
            yield base
        finally:
            stop(proc)


def ingest(redis_url: str, durations_ns: list[int]) -> None:
    """Records through the real path: packed into stream entries as a worker does, then ingested."""
    client = redis.Redis.from_url(redis_url)
    ts = now_ns()
    for start in range(0, len(durations_ns), schema.BATCH_MAX_RECORDS):
        records = [
            request(ts=ts, duration_ns=d) for d in durations_ns[start : start + schema.BATCH_MAX_RECORDS]
        ]
        client.xadd(schema.RECORDS_STREAM, {schema.RECORDS_FIELD: schema.pack_batch(records)})
    client.close()
    call_command("ingest", "--once")


def query(base: str, promql: str, at: float | None = None) -> tuple[float, float] | None:
    """(evaluation time, value) of a one-series instant query, None while it has no result."""
    params = {"query": promql} | ({"time": at} if at is not None else {})
    answer = requests.get(f"{base}/api/v1/query", params=params, timeout=5).json()
    assert answer["status"] == "success", answer
    result = answer["data"]["result"]
    if not result:
        return None
    assert len(result) == 1, result
    at, number = result[0]["value"]
    return float(at), float(number)


def _wait(ready, what, base: str, tmp: Path):
    """Poll `ready()` until it answers something true, for at most WAIT_S; then fail saying `what`
    (a string, or a function giving one, called only on failure) with Prometheus' view."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            if found := ready():
                return found
        except requests.RequestException:
            pass
        time.sleep(0.2)
    targets = ""
    try:
        targets = requests.get(f"{base}/api/v1/targets", timeout=2).text
    except requests.RequestException:
        pass
    log = (tmp / "prometheus.log").read_text(errors="replace")[-3000:]
    what = what() if callable(what) else what
    raise AssertionError(f"waited {WAIT_S}s for {what}\ntargets: {targets}\nprometheus log:\n{log}")


def wait_for_count(base: str, tmp: Path, expected: int) -> float:
    """Wait until Prometheus has scraped `expected` requests; return that sample's query time."""

    def scraped():
        answer = query(base, COUNT)
        return answer[0] if answer and answer[1] == expected else None

    return _wait(scraped, lambda: f"{COUNT} == {expected} (last: {query(base, COUNT)})", base, tmp)


def true_p99_bucket(durations_ns: list[int]) -> tuple[float, float]:
    """The (lower, upper] `le` bucket, in seconds, holding the nearest-rank p99 of the durations."""
    p99 = sorted(durations_ns)[math.ceil(0.99 * len(durations_ns)) - 1] / 1e9
    upper = next(bound for bound in BOUNDS if p99 <= bound)
    lower = max([0.0] + [bound for bound in BOUNDS if bound < upper])
    return lower, upper


def test_prometheus_scrapes_request_counts_and_latency_quantiles(web, redis_url, tmp_path):
    rng = random.Random(11)
    # Mostly fast, a slow tail: the p99 lands in (0.25, 0.5], then the second batch's in (1, 2.5].
    first = [rng.randint(1_000_000, 20_000_000) for _ in range(985)] + [
        rng.randint(260, 480) * 10**6 for _ in range(15)
    ]
    second = [rng.randint(30_000_000, 90_000_000) for _ in range(490)] + [
        rng.randint(1100, 2400) * 10**6 for _ in range(10)
    ]

    with running_prometheus(web, tmp_path, TOKEN) as base:
        ingest(redis_url, first)
        t1 = wait_for_count(base, tmp_path, len(first))
        lower, upper = true_p99_bucket(first)
        _, p99 = query(base, f"histogram_quantile(0.99, {BUCKETS})")
        assert (lower, upper) == (0.25, 0.5)
        assert lower <= p99 <= upper, f"p99 {p99} outside the true p99's bucket ({lower}, {upper}]"

        ingest(redis_url, second)
        wait_for_count(base, tmp_path, len(first) + len(second))
        # The second batch alone: today's buckets minus those at t1 (no rate(): its extrapolation
        # scales each bucket series differently, which would blur an exact comparison).
        _, p99_second = query(base, f"histogram_quantile(0.99, {BUCKETS} - sum by (le) ({SELECTOR} @ {t1}))")
        lower, upper = true_p99_bucket(second)
        assert (lower, upper) == (1.0, 2.5)
        assert lower <= p99_second <= upper, f"p99 {p99_second} outside ({lower}, {upper}]"
        assert query(base, 'up{job="obsweb-web"}')[1] == 1
        # The sample's probe-worker job runs too; nothing listens at its target here, so it is down.
        probes_down = _wait(lambda: query(base, 'up{job="obsweb-probes"}'), "the probes job", base, tmp_path)
        assert probes_down[1] == 0
        print(f"\nPromQL saw {len(first) + len(second)} requests; p99 {p99:.4f} s, then {p99_second:.4f} s")


def test_the_sample_config_passes_promtool(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config = tmp_path / "prometheus.yml"
    config.write_text(SAMPLE.read_text().replace("/etc/prometheus/obsweb-metrics-token", str(token_file)))

    result = subprocess.run(
        [_binary(PROMTOOL), "check", "config", str(config)], capture_output=True, text=True
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_is_told_no_without_the_right_token(web, tmp_path):
    """With a wrong token the target is down with a 401, not scraped empty."""

    def refused():
        targets = requests.get(f"{base}/api/v1/targets", timeout=2).json()["data"]["activeTargets"]
        errors = [
            t["lastError"] for t in targets if t["labels"]["job"] == "obsweb-web"
        ]  # none before discovery
        return next((error for error in errors if "401" in error), None)

    with running_prometheus(web, tmp_path, "wrong-token-0123456789abcdef") as base:
        assert "401" in _wait(refused, "the web target to report 401", base, tmp_path)
