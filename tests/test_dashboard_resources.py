"""The resources page, the service page's Resources, TCP health and Queues sections, and the service
map's CPU colouring and TCP trouble labels, from records fed through the real ingest path."""

import json

import pytest

from obsweb.telemetry.aggregate import apply_records
from tests.factories import client_request, flow, health, host_resource, kafka_request, now_ns, redis_request
from tests.factories import resource as resource_record

HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture
def viewer_client(client, personas):
    client.force_login(personas["viewer"])
    return client


def recent(**attrs) -> dict:
    return {"ts": now_ns(seconds_ago=30), **attrs}


@pytest.fixture
def used(db):
    apply_records(
        [
            resource_record(**recent()),
            resource_record(**recent(**{"service.name": "nginx", "process.cpu.time_ns": 9 * 10**9})),
            host_resource(**recent()),
        ]
    )


@pytest.mark.parametrize("path", ["/resources/", "/services/shop-api/"])
def test_it_sends_anonymous_visitors_to_login(client, personas, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_resources_page_lists_services_by_cpu_and_the_hosts(viewer_client, used):
    response = viewer_client.get("/resources/")

    assert response.status_code == 200
    assert [row["name"] for row in response.context["services"]] == ["nginx", "shop-api"]
    html = response.content.decode()
    assert 'id="services-usage"' in html and 'data-host="h1"' in html
    assert "100 MiB" in html  # shop-api's memory
    chart = json.loads(
        html.split('id="resources-cpu-data" type="application/json">')[1].split("</script>")[0]
    )
    assert [line["name"] for line in chart["lines"]] == ["nginx", "shop-api"]
    assert "/static/obsweb/resources.js" in html
    assert 'href="/resources/"' in html  # the nav link


def test_the_resources_page_explains_an_empty_installation(viewer_client):
    response = viewer_client.get("/resources/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "No resource records yet: is the cpu probe on?" in html
    assert "plotly" not in html


def test_the_resources_page_rejects_a_bad_window(viewer_client):
    response = viewer_client.get("/resources/?since=yesterday")

    assert response.status_code == 400
    assert "This time window cannot be shown" in response.content.decode()


def test_the_resources_page_shows_queue_rates_per_topic(viewer_client):
    apply_records(
        [
            *(kafka_request(**recent()) for _ in range(3)),
            kafka_request(**recent(**{"db.operation.name": "Fetch"})),
            redis_request(**recent(**{"db.operation.name": "LPUSH", "db.query.text": "LPUSH ? ?"})),
            redis_request(**recent(**{"db.operation.name": "GET"})),  # no queue
        ]
    )

    response = viewer_client.get("/resources/")

    queues = {(q["service"], q["destination"]): q for q in response.context["queues"]}
    assert (queues["kafka:9092", "orders"]["produced"], queues["kafka:9092", "orders"]["consumed"]) == (3, 1)
    assert (queues["redis:6379", ""]["produced"], queues["redis:6379", ""]["consumed"]) == (1, 0)
    html = response.content.decode()
    assert "not visible on the wire" in html and "<code>orders</code>" in html


def test_a_kafka_services_page_shows_its_topics(viewer_client):
    apply_records([kafka_request(**recent())])

    response = viewer_client.get("/services/kafka:9092/")

    assert [q["destination"] for q in response.context["queues"]] == ["orders"]
    assert 'id="queues"' in response.content.decode()


def test_the_service_page_draws_resources_and_tcp_health(viewer_client, used):
    apply_records([client_request(**recent()), flow(**recent()), health(**recent())])

    html = viewer_client.get("/services/shop-api/").content.decode()

    assert 'id="service-resources-data"' in html and "/static/obsweb/service_resources.js" in html
    assert html.count("/static/plotly/plotly.min.js") == 1
    section = html.split('id="tcp-health"')[1].split("</section>")[0]
    assert ">nginx</a>" in section and "caller" in section
    assert ">2<" in section  # retransmits


def test_the_service_page_explains_missing_resources_and_tcp_records(viewer_client):
    apply_records([client_request(**recent())])

    html = viewer_client.get("/services/shop-api/").content.decode()

    assert "No resource records yet: is the cpu probe on?" in html
    assert "No TCP connection to or from this service seen" in html
    assert "service_resources.js" not in html


def test_the_map_colours_by_cpu_and_labels_tcp_trouble(viewer_client, used):
    apply_records([client_request(**recent()), flow(**recent()), health(**recent())])

    response = viewer_client.get("/map/")

    drawing = response.context["service_map"]
    nodes = {node["name"]: node for node in drawing["nodes"]}
    assert nodes["shop-api"]["cpu_percent"] is not None and nodes["shop-api"]["cpu_colour"].startswith("rgb(")
    (arrow,) = drawing["edges"]
    assert arrow["tcp_label"] == "2 retx, 1 rst"
    assert 'name="colour-by" value="cpu"' in response.content.decode()


def test_hostile_service_names_are_escaped(viewer_client):
    apply_records(
        [
            resource_record(**recent(**{"service.name": HOSTILE})),
            kafka_request(**recent(**{"service.name": HOSTILE, "messaging.destination.name": HOSTILE})),
            health(**recent(**{"peer.service": HOSTILE})),
            client_request(**recent(**{"peer.service": HOSTILE})),
        ]
    )

    for path in ("/resources/", "/services/nginx/", "/services/%3Cscript%3Ealert(1)%3C/script%3E/"):
        response = viewer_client.get(path)
        assert response.status_code == 200, path
        html = response.content.decode()
        assert HOSTILE not in html, path
        assert ESCAPED in html or "\\u003Cscript\\u003E" in html, path


def test_the_resources_page_renders_in_a_bounded_number_of_queries(
    viewer_client, django_assert_max_num_queries
):
    apply_records(
        [resource_record(**recent(**{"service.name": f"svc-{i}", "host": f"h{i % 3}"})) for i in range(30)]
        + [host_resource(**recent(host=f"h{i}")) for i in range(3)]
        + [kafka_request(**recent(**{"messaging.destination.name": f"t{i}"})) for i in range(10)]
    )

    # session, user, 4 resource sums, the CPU chart, queues, and base.html's banner and host warnings
    with django_assert_max_num_queries(14):
        response = viewer_client.get("/resources/")
    assert len(response.context["services"]) == 30
    assert len(response.context["cpu_chart"]["lines"]) == 10
