"""What the ingester stores: services, their endpoints, per-minute rollups, edges and samples."""

from django.db import models

from obsweb.fleet.models import Host


class Service(models.Model):
    """A named service (DESIGN.md: Service identity) or an external peer seen only as `ip:port`."""

    name = models.CharField(max_length=255, unique=True)
    external = models.BooleanField(default=False)
    protocol = models.CharField(max_length=32, blank=True)  # the protocol it serves, when it serves
    hosts = models.ManyToManyField(Host, blank=True, related_name="services")
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Endpoint(models.Model):
    """An HTTP route (method + normalized route) or a protocol operation (+ collection/table/topic),
    and for databases one normalized query: each query text is an endpoint of its own.

    The identity holds `query_hash`, not the text: PostgreSQL's B-tree refuses index entries over
    about 2.7 KB and a query may be 4 KiB (aggregate.QUERY_MAX_CHARS); equal texts hash equal.
    """

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="endpoints")
    protocol = models.CharField(max_length=32)
    method = models.CharField(max_length=32, blank=True)
    route = models.CharField(max_length=255, blank=True)
    operation = models.CharField(max_length=64, blank=True)
    target = models.CharField(max_length=255, blank=True)  # collection, table or topic
    query = models.TextField(blank=True)  # db.query.text as received: literals already replaced by ?
    query_hash = models.CharField(max_length=16, blank=True)  # sha256 of `query`, 16 hex; "" without one
    query_summary = models.CharField(max_length=255, blank=True)  # db.query.summary of the first record

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["service", "protocol", "method", "route", "operation", "target", "query_hash"],
                name="endpoint_identity",
            )
        ]

    def __str__(self):
        name = f"{self.service} {self.method or self.operation} {self.route or self.target}"
        return f"{name} {self.query_summary or self.query_hash}".rstrip()


class Rollup(models.Model):
    """Requests served by one endpoint in one minute with one status code.

    `histogram` is a mergeable latency sketch (obsweb.telemetry.histogram), so percentiles
    of any window come from summing buckets, not from averaging percentiles.
    """

    minute = models.DateTimeField()
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="rollups")
    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="rollups")
    status_code = models.IntegerField(default=0)  # 0 for protocols without one
    count = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    request_bytes = models.BigIntegerField(default=0)
    response_bytes = models.BigIntegerField(default=0)
    duration_sum_ns = models.BigIntegerField(default=0)
    histogram = models.JSONField(default=dict)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["minute", "endpoint", "status_code"], name="rollup_identity")
        ]
        indexes = [models.Index(fields=["service", "minute"])]


class Edge(models.Model):
    """Calls from one service to another in one minute, as seen from the caller's side."""

    minute = models.DateTimeField()
    source = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="edges_out")
    target = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="edges_in")
    protocol = models.CharField(max_length=32)
    count = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    bytes = models.BigIntegerField(default=0)
    duration_sum_ns = models.BigIntegerField(default=0)
    histogram = models.JSONField(default=dict)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["minute", "source", "target", "protocol"], name="edge_identity")
        ]
        indexes = [
            models.Index(fields=["minute"]),
            # A service page's callers and dependencies: without these, a -15m window read
            # every edge row of the service's 7 days through the foreign-key index.
            models.Index(fields=["source", "minute"], name="edge_source_minute"),
            models.Index(fields=["target", "minute"], name="edge_target_minute"),
        ]


class RequestSample(models.Model):
    """One request kept whole: every error, every slow one, and a few per endpoint per minute."""

    ts = models.DateTimeField(db_index=True)
    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="samples")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.SET_NULL, null=True, related_name="samples")
    host = models.CharField(max_length=255)
    span_kind = models.CharField(max_length=16)
    status_code = models.IntegerField(default=0)
    error = models.BooleanField(default=False)
    duration_ns = models.BigIntegerField()
    trace_id = models.CharField(max_length=32, blank=True, db_index=True)
    # Request paths (obsweb/telemetry/paths.py) are assembled by these three links.
    span_id = models.CharField(max_length=16, blank=True, db_index=True)
    parent_span_id = models.CharField(max_length=16, blank=True, db_index=True)
    connection = models.CharField(max_length=120, blank=True, db_index=True)  # "cip:port>sip:port"
    attributes = models.JSONField(default=dict)  # the record as received (already redacted on the host)

    class Meta:
        indexes = [models.Index(fields=["service", "ts"])]


class IngestedBatch(models.Model):
    """Stream entries already written, so a replay after a crash changes nothing."""

    stream_id = models.CharField(max_length=64, unique=True)
    ingested_at = models.DateTimeField(auto_now_add=True, db_index=True)


class ResourceUsage(models.Model):
    """What one service used on one host in one minute, summed from the workers' resource records;
    with `service` None, the whole host's use (schema.RESOURCE_SCOPE_HOST) and its memory and CPUs.

    Amounts are sums over the minute's intervals; memory is the latest reading (`memory_read_ns`
    says which) and the minute's highest, processes the most seen in one interval.
    """

    minute = models.DateTimeField()
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="resource_usage")
    service = models.ForeignKey(Service, on_delete=models.CASCADE, null=True, related_name="resource_usage")
    interval_ns = models.BigIntegerField(default=0)  # the time the summed intervals cover
    cpu_time_ns = models.BigIntegerField(default=0)
    runq_wait_ns = models.BigIntegerField(default=0)
    runq_waits = models.BigIntegerField(default=0)
    runq_wait_max_ns = models.BigIntegerField(default=0)
    processes = models.IntegerField(default=0)
    rss_bytes = models.BigIntegerField(null=True)
    rss_max_bytes = models.BigIntegerField(null=True)
    memory_total_bytes = models.BigIntegerField(null=True)  # host rows
    memory_available_bytes = models.BigIntegerField(null=True)  # host rows
    cpu_count = models.IntegerField(null=True)  # host rows
    memory_read_ns = models.BigIntegerField(default=0)  # ts of the record the memory figures come from
    net_bytes_sent = models.BigIntegerField(default=0)
    net_bytes_received = models.BigIntegerField(default=0)
    disk_read_bytes = models.BigIntegerField(default=0)
    disk_write_bytes = models.BigIntegerField(default=0)
    disk_read_ops = models.BigIntegerField(default=0)
    disk_write_ops = models.BigIntegerField(default=0)
    disk_wait_ns = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["minute", "host", "service"], name="resource_usage_identity"),
            # NULLs are distinct in a unique index: the host rows need their own.
            models.UniqueConstraint(
                fields=["minute", "host"],
                condition=models.Q(service__isnull=True),
                name="resource_usage_host_identity",
            ),
        ]
        indexes = [
            models.Index(fields=["minute"]),
            models.Index(fields=["service", "minute"], name="resource_usage_service_minute"),
        ]


class TcpHealth(models.Model):
    """TCP connections from one service to another in one minute, and their trouble: failed
    connects, retransmits, resets and round-trip times, from the tcp probe's flow records.

    Connections count the client side's close records (as Edge does for protocol "tcp"); trouble
    is counted by whichever end saw it, so with both ends traced one reset shows once as sent
    and once as received.
    """

    minute = models.DateTimeField()
    source = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="tcp_health_out")
    target = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="tcp_health_in")
    connections = models.BigIntegerField(default=0)
    failures = models.BigIntegerField(default=0)  # every failed connect, whatever the kind
    failures_refused = models.BigIntegerField(default=0)
    failures_timeout = models.BigIntegerField(default=0)
    retransmits = models.BigIntegerField(default=0)
    resets_sent = models.BigIntegerField(default=0)
    resets_received = models.BigIntegerField(default=0)
    rtt_sum_us = models.BigIntegerField(default=0)
    rtt_samples = models.BigIntegerField(default=0)  # records that reported an RTT

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["minute", "source", "target"], name="tcp_health_identity")
        ]
        indexes = [
            models.Index(fields=["minute"]),
            models.Index(fields=["source", "minute"], name="tcp_health_source_minute"),
            models.Index(fields=["target", "minute"], name="tcp_health_target_minute"),
        ]


class ServerTotal(models.Model):
    """Everything a service has served under one Prometheus label set, since it was first seen.

    Kept by the ingester in the transaction that writes the rollups (obsweb.telemetry.cumulative),
    never pruned: Prometheus counters must not go down when minute rollups age out.
    """

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="server_totals")
    protocol = models.CharField(max_length=32)
    method = models.CharField(max_length=32, blank=True)  # HTTP only
    name = models.CharField(max_length=255, blank=True)  # the HTTP route, or the protocol operation
    status_code = models.IntegerField(default=0)  # 0 for protocols without one
    count = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    duration_sum_s = models.FloatField(default=0.0)  # float: a bigint of ns overflows within a year
    buckets = models.JSONField(default=list)  # per cumulative.BOUNDS_NS bucket, then +Inf; not cumulative

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["service", "protocol", "method", "name", "status_code"], name="server_total_identity"
            )
        ]


class EdgeTotal(models.Model):
    """Every call one service made to another over one protocol, since first seen (see ServerTotal)."""

    source = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="edge_totals_out")
    target = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="edge_totals_in")
    protocol = models.CharField(max_length=32)
    count = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    duration_sum_s = models.FloatField(default=0.0)
    buckets = models.JSONField(default=list)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "target", "protocol"], name="edge_total_identity")
        ]
