"""Telemetry rows for dashboard tests, shaped the way the ingester writes them.

Also used from `manage.py shell -c` in the browser test, so it must not depend on pytest.
"""

import hashlib
from datetime import timedelta

from django.utils import timezone

from obsweb.fleet.models import Host
from obsweb.telemetry import histogram
from obsweb.telemetry.models import Edge, Endpoint, RequestSample, Rollup, Service
from probes import schema


def current_minute(minutes_ago: int = 0):
    return timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)


def seed_service(
    name: str,
    *,
    host: str = "web-1",
    protocol: str = "http",
    requests: int = 100,
    errors: int = 0,
    latency_ms: float = 12.0,
    minutes_ago: int = 0,
    route: str = "/",
) -> Service:
    """`requests` calls to GET `route` of `name` in one minute, `errors` of them answered 500."""
    service, _ = Service.objects.get_or_create(name=name, defaults={"protocol": protocol})
    service.hosts.add(Host.objects.get_or_create(name=host)[0])
    endpoint, _ = Endpoint.objects.get_or_create(
        service=service, protocol=protocol, method="GET", route=route
    )
    for status_code, n, failed in ((200, requests - errors, 0), (500, errors, errors)):
        if n:
            Rollup.objects.create(
                minute=current_minute(minutes_ago),
                endpoint=endpoint,
                service=service,
                status_code=status_code,
                count=n,
                errors=failed,
                duration_sum_ns=int(n * latency_ms * 1e6),
                histogram=histogram.add({}, latency_ms * 1e6, n),
            )
    return service


def seed_edge(
    source: str,
    target: str,
    *,
    protocol: str = "http",
    requests: int = 50,
    errors: int = 0,
    latency_ms: float = 5.0,
    external: bool = False,
) -> Edge:
    """`requests` calls from `source` to `target` in the current minute."""
    caller = Service.objects.get_or_create(name=source)[0]
    callee = Service.objects.get_or_create(
        name=target, defaults={"external": external, "protocol": protocol}
    )[0]
    return Edge.objects.create(
        minute=current_minute(),
        source=caller,
        target=callee,
        protocol=protocol,
        count=requests,
        errors=errors,
        bytes=requests * 512,
        duration_sum_ns=int(requests * latency_ms * 1e6),
        histogram=histogram.add({}, latency_ms * 1e6, requests),
    )


def seed_query(
    name: str,
    query: str,
    *,
    protocol: str = "postgresql",
    operation: str = "SELECT",
    target: str = "users",
    requests: int = 10,
    errors: int = 0,
    latency_ms: float = 1.0,
    minutes_ago: int = 0,
) -> Endpoint:
    """`requests` runs of one normalized `query` served by the database `name` in one minute."""
    service, _ = Service.objects.get_or_create(name=name, defaults={"protocol": protocol})
    endpoint, _ = Endpoint.objects.get_or_create(
        service=service,
        protocol=protocol,
        operation=operation,
        target=target,
        query=query,
        query_hash=hashlib.sha256(query.encode()).hexdigest()[:16],
    )
    Rollup.objects.create(
        minute=current_minute(minutes_ago),
        endpoint=endpoint,
        service=service,
        count=requests,
        errors=errors,
        duration_sum_ns=int(requests * latency_ms * 1e6),
        histogram=histogram.add({}, latency_ms * 1e6, requests),
    )
    return endpoint


def seed_sample(
    name: str,
    *,
    route: str = "/",
    status: int = 200,
    duration_ms: float = 12.0,
    seconds_ago: int = 10,
    host: str = "web-1",
    **attributes,
) -> RequestSample:
    """One stored HTTP request of `name`, failed when `status` >= 500; extra record attributes
    as dotted keys: seed_sample("db", **{"db.operation.name": "SELECT"})."""
    service = Service.objects.get_or_create(name=name)[0]
    ts = timezone.now() - timedelta(seconds=seconds_ago)
    error = status >= 500
    record = {
        schema.HOST: host,
        schema.TS: int(ts.timestamp() * 1e9),
        schema.SERVICE: name,
        schema.HTTP_METHOD: "GET",
        schema.HTTP_ROUTE: route,
        schema.HTTP_STATUS: status,
        schema.ERROR: error,
        schema.DURATION_NS: int(duration_ms * 1e6),
    } | attributes
    return RequestSample.objects.create(
        ts=ts,
        service=service,
        host=host,
        span_kind=schema.SPAN_SERVER,
        status_code=status,
        error=bool(record[schema.ERROR]),
        duration_ns=record[schema.DURATION_NS],
        trace_id=record.get(schema.TRACE_ID, ""),
        span_id=record.get(schema.SPAN_ID, ""),
        parent_span_id=record.get(schema.PARENT_SPAN_ID, ""),
        attributes=record,
    )
