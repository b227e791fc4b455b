"""GET /api/v1/resources, /api/v1/services/<name>/resources and the tcp fields of /api/v1/edges,
from records fed through the real ingest path."""

import pytest

from obsweb.api import serializers
from obsweb.telemetry.aggregate import apply_records
from obsweb.telemetry.records import to_datetime
from tests.factories import ALLOWED, MINUTE_NS, T0, api_client, client_request, flow, health, host_resource
from tests.factories import resource as resource_record

WINDOW = {"since": to_datetime(T0).isoformat(), "until": to_datetime(T0 + 2 * MINUTE_NS).isoformat()}


@pytest.fixture(autouse=True)
def api_settings(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # personas, fast


@pytest.fixture
def used(db):
    """shop-api on h1 and h2 and nginx on h1 over the window's first minute; h1 as a whole."""
    apply_records(
        [
            resource_record(),
            resource_record(host="h2"),
            resource_record(**{"service.name": "nginx", "process.cpu.time_ns": 12 * 10**9}),
            host_resource(),
        ]
    )


def get(client, url, **params):
    response = client.get(url, params)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.parametrize(("persona", "how"), ALLOWED)
def test_it_lists_resource_use_to_staff_and_viewers(personas, used, persona, how):
    answer = get(api_client(personas, persona, how), "/api/v1/resources", **WINDOW)

    assert [row["name"] for row in answer["services"]] == ["nginx", "shop-api"]  # busiest CPU first
    assert [row["name"] for row in answer["hosts"]] == ["h1"]


@pytest.mark.parametrize("url", ["/api/v1/resources", "/api/v1/services/shop-api/resources"])
def test_it_refuses_outsiders_with_401(personas, used, url):
    assert api_client(personas, "outsider").get(url).status_code == 401


def test_a_service_row_sums_its_hosts_over_the_window(personas, used):
    shop = get(api_client(personas, "viewer"), "/api/v1/resources", **WINDOW)["services"][1]

    assert set(shop) == set(serializers.ServiceResources().fields)
    assert shop["hosts"] == ["h1", "h2"]
    assert shop["cpu_seconds"] == 6.0
    assert shop["cpu_percent"] == 5.0  # 6 s of CPU over the window's 120 s
    assert (shop["runq_wait_avg_ms"], shop["runq_wait_max_ms"]) == (2.0, 9.0)
    assert (shop["net_bytes_sent"], shop["net_bytes_received"]) == (2000, 8000)
    assert (shop["disk_read_bytes"], shop["disk_write_bytes"], shop["disk_ops"]) == (16384, 8192, 6)
    assert shop["disk_wait_avg_ms"] == 1.0
    assert shop["rss_bytes"] == 100 * 2**20


def test_a_host_row_has_its_memory_and_cpus(personas, used):
    (h1,) = get(api_client(personas, "viewer"), "/api/v1/resources", **WINDOW)["hosts"]

    assert set(h1) == set(serializers.HostResources().fields)
    assert (h1["cpu_count"], h1["memory_total_bytes"], h1["memory_available_bytes"]) == (
        2,
        8 * 2**30,
        5 * 2**30,
    )
    assert h1["cpu_percent"] == 10.0


def test_it_filters_by_host(personas, used):
    answer = get(api_client(personas, "viewer"), "/api/v1/resources", host="h2", **WINDOW)

    assert [(row["name"], row["cpu_seconds"]) for row in answer["services"]] == [("shop-api", 3.0)]
    assert answer["hosts"] == []


def test_it_answers_404_for_an_unknown_host_or_service(personas, used):
    client = api_client(personas, "viewer")

    assert client.get("/api/v1/resources", {"host": "nope"}).status_code == 404
    response = client.get("/api/v1/services/nope/resources")
    assert response.status_code == 404
    assert "no service named 'nope'" in response.json()["detail"]


@pytest.mark.parametrize("url", ["/api/v1/resources", "/api/v1/services/shop-api/resources"])
def test_it_rejects_a_bad_window_with_400(personas, used, url):
    response = api_client(personas, "viewer").get(url, {"since": "yesterday"})

    assert response.status_code == 400
    assert "since" in response.json()["detail"]


def test_a_services_series_has_every_minute_of_the_window(personas, used):
    series = get(api_client(personas, "viewer"), "/api/v1/services/shop-api/resources", **WINDOW)

    assert set(series) == set(serializers.ResourceSeries().fields)
    assert len(series["minutes"]) == 2
    assert series["cpu_percent"] == [10.0, None]  # 6 s over one minute, then no record
    assert series["rss_bytes"] == [2 * 100 * 2**20, None]
    assert series["disk_ops"] == [6, None]


def test_a_services_series_over_more_than_31_days_is_a_400(personas, used):
    # A point per minute: -9999999h asked for 600 million, tens of GB (found by test_api_fuzz.py).
    client = api_client(personas, "viewer")
    response = client.get("/api/v1/services/shop-api/resources", {"since": "-9999999h"})

    assert response.status_code == 400
    assert response.json()["detail"].startswith("a per-minute series covers at most 31 days, not 416666")


def test_an_empty_installation_answers_empty_lists(personas):
    assert get(api_client(personas, "viewer"), "/api/v1/resources") == {"services": [], "hosts": []}


def test_edges_carry_the_tcp_health_of_their_pair(personas):
    apply_records(
        [
            client_request(),
            flow(),
            health(),
            health(**{"flow.failure": "refused", "flow.rtt_us": 2500, "flow.retransmits": 0}),
            health(**{"peer.service": "orders", "flow.failure": "timeout", "flow.rtt_us": None}),
        ]
    )

    edges = get(api_client(personas, "viewer"), "/api/v1/edges", **WINDOW)["edges"]

    by_key = {(e["source"], e["target"], e["protocol"]): e for e in edges}
    tcp = by_key["nginx", "shop-api", "http"]["tcp"]
    assert tcp == by_key["nginx", "shop-api", "tcp"]["tcp"]
    assert tcp == {
        "connections": 1,
        "failures": 1,
        "failures_refused": 1,
        "failures_timeout": 0,
        "retransmits": 2,
        "resets_sent": 0,
        "resets_received": 2,
        "rtt_ms": 2.0,
    }
    quiet = by_key["nginx", "orders", "tcp"]  # connects timed out: no traffic, still an edge
    assert (quiet["requests"], quiet["tcp"]["failures_timeout"], quiet["tcp"]["rtt_ms"]) == (0, 1, None)


def test_the_query_count_does_not_grow_with_the_number_of_services(personas, django_assert_max_num_queries):
    apply_records([resource_record(**{"service.name": f"svc-{i}"}) for i in range(30)] + [host_resource()])
    client = api_client(personas, "viewer", "token")

    # token lookup, service sums, their hosts, their names, host sums
    with django_assert_max_num_queries(5):
        assert len(get(client, "/api/v1/resources", **WINDOW)["services"]) == 30
