"""Query-parameter validation for the API, and the response shapes its OpenAPI schema documents.

The response serializers only describe what obsweb.telemetry.queries returns (the views send
those dicts as they are); tests/test_api_schema.py keeps the two in step.
"""

from datetime import timedelta

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from obsweb.fleet import control
from obsweb.telemetry import queries
from probes import schema

WINDOW_HELP = "Relative (-30s, -15m, -1h, -7d) or ISO 8601; since defaults to -15m, until to now."
# A per-minute series has a point per minute of its window: 31 days are 44,640 points, about 3 MB
# of JSON (since=-9999999h asked for 600 million, tens of GB built in the web process).
MAX_SERIES_WINDOW = timedelta(days=31)


@extend_schema_field(
    {"type": "string", "anyOf": [{"pattern": "^-[0-9]{1,7}[smhd]$"}, {"format": "date-time"}]}
)
class WindowTimeField(serializers.CharField):
    """since or until, relative or ISO 8601 as queries.parse_window reads them. The schema says
    so, so that clients and the API fuzzer (tests/test_api_fuzz.py) send times, not any text."""


class WindowQuery(serializers.Serializer):
    since = WindowTimeField(required=False, allow_blank=True, help_text=WINDOW_HELP)
    until = WindowTimeField(required=False, allow_blank=True, help_text=WINDOW_HELP)

    def validate(self, attrs):
        try:
            attrs["window"] = queries.parse_window(attrs.get("since"), attrs.get("until"))
        except queries.WindowError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return attrs


class SeriesQuery(WindowQuery):
    """The window of a per-minute series, at most MAX_SERIES_WINDOW long."""

    def validate(self, attrs):
        attrs = super().validate(attrs)
        since, until = attrs["window"]
        if until - since > MAX_SERIES_WINDOW:
            raise serializers.ValidationError(
                f"a per-minute series covers at most {MAX_SERIES_WINDOW.days} days, not "
                f"{(until - since).days}: narrow since and until"
            )
        return attrs


class EndpointsQuery(WindowQuery):
    sort = serializers.ChoiceField(
        choices=queries.ENDPOINT_SORTS,
        default=queries.SORT_REQUESTS,
        help_text="Busiest first by requests, or by total_time (the sum of durations): the top queries.",
    )


class RequestsQuery(WindowQuery):
    since = WindowTimeField(
        required=False, allow_blank=True, help_text=WINDOW_HELP + " Without since and until: any age."
    )
    service = serializers.CharField(required=False, help_text="Service name.")
    status = serializers.IntegerField(required=False, min_value=0, max_value=999, help_text="Status code.")
    min_duration_ms = serializers.IntegerField(required=False, min_value=0)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000, default=100)

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if not attrs.get("since") and not attrs.get("until"):
            attrs["window"] = (None, None)
        return attrs


# --- response shapes (documentation) ---------------------------------------------------------


class ServiceSummary(serializers.Serializer):
    name = serializers.CharField()
    hosts = serializers.ListField(child=serializers.CharField())
    protocol = serializers.CharField()
    requests = serializers.IntegerField()
    rps = serializers.FloatField()
    errors = serializers.IntegerField(help_text="HTTP 5xx and protocol errors.")
    client_errors = serializers.IntegerField(help_text="HTTP 4xx.")
    error_rate = serializers.FloatField()
    p50_ms = serializers.FloatField(allow_null=True)
    p90_ms = serializers.FloatField(allow_null=True)
    p99_ms = serializers.FloatField(allow_null=True)


class ServiceList(serializers.Serializer):
    services = ServiceSummary(many=True)


class EndpointSummary(serializers.Serializer):
    id = serializers.IntegerField(help_text="For /services/<name>/paths/<id>/ (its request paths).")
    method = serializers.CharField(required=False, help_text="HTTP only.")
    route = serializers.CharField(required=False, help_text="HTTP only.")
    operation = serializers.CharField(required=False, help_text="Other protocols.")
    collection = serializers.CharField(required=False, help_text="MongoDB and unknown protocols.")
    table = serializers.CharField(required=False, help_text="PostgreSQL, MySQL, Redis.")
    topic = serializers.CharField(required=False, help_text="Kafka.")
    query = serializers.CharField(
        required=False, allow_blank=True, help_text="Other protocols: db.query.text, literals replaced by ?."
    )
    query_summary = serializers.CharField(
        required=False, allow_blank=True, help_text="Other protocols: db.query.summary."
    )
    requests = serializers.IntegerField(help_text="Operations: a pipeline of n counts n.")
    errors = serializers.IntegerField()
    p50_ms = serializers.FloatField(allow_null=True)
    p90_ms = serializers.FloatField(allow_null=True)
    p99_ms = serializers.FloatField(allow_null=True)
    total_ms = serializers.FloatField(help_text="The durations added up: where the service spends its time.")
    status_codes = serializers.DictField(child=serializers.IntegerField(), help_text='{"200": requests}')


class EndpointList(serializers.Serializer):
    endpoints = EndpointSummary(many=True)


class TcpHealthSummary(serializers.Serializer):
    connections = serializers.IntegerField(help_text="Connections closed, as the callers saw them.")
    failures = serializers.IntegerField(help_text="Connects that failed, whatever the reason.")
    failures_refused = serializers.IntegerField()
    failures_timeout = serializers.IntegerField()
    retransmits = serializers.IntegerField(help_text="Segments retransmitted, by either end.")
    resets_sent = serializers.IntegerField(help_text="RSTs sent by the end that reported them.")
    resets_received = serializers.IntegerField(
        help_text="RSTs received; with both ends traced, one reset counts as sent and as received."
    )
    rtt_ms = serializers.FloatField(allow_null=True, help_text="Mean smoothed RTT reported; null: none seen.")


class EdgeSummary(serializers.Serializer):
    source = serializers.CharField()
    target = serializers.CharField()
    protocol = serializers.CharField()
    requests = serializers.IntegerField(help_text="Requests, or connections for protocol tcp.")
    errors = serializers.IntegerField()
    p99_ms = serializers.FloatField(allow_null=True)
    bytes = serializers.IntegerField()
    rps = serializers.FloatField()
    total_ms = serializers.FloatField(help_text="The calls' durations added up: where callers spend time.")
    target_external = serializers.BooleanField()
    tcp = TcpHealthSummary(
        help_text="TCP health between source and target (the same on each protocol between them). A "
        "pair with TCP trouble but no traffic shows as a tcp edge with 0 requests."
    )


class EdgeList(serializers.Serializer):
    edges = EdgeSummary(many=True)


class ResourcesQuery(WindowQuery):
    host = serializers.CharField(required=False, help_text="Only what was used on this host.")


class ResourceAmounts(serializers.Serializer):
    cpu_percent = serializers.FloatField(help_text="On-CPU time in % of one core, averaged over the window.")
    cpu_seconds = serializers.FloatField()
    runq_wait_avg_ms = serializers.FloatField(
        allow_null=True, help_text="Mean time runnable but waiting for a CPU; null: no waits seen."
    )
    runq_wait_max_ms = serializers.FloatField()
    net_bytes_sent = serializers.IntegerField(help_text="Bytes written to TCP sockets.")
    net_bytes_received = serializers.IntegerField()
    disk_read_bytes = serializers.IntegerField()
    disk_write_bytes = serializers.IntegerField()
    disk_ops = serializers.IntegerField(help_text="Block I/O operations, reads and writes.")
    disk_wait_avg_ms = serializers.FloatField(allow_null=True, help_text="Mean time from issue to done.")


class ServiceResources(ResourceAmounts):
    name = serializers.CharField()
    hosts = serializers.ListField(child=serializers.CharField())
    rss_bytes = serializers.IntegerField(
        allow_null=True, help_text="Highest resident memory on one host in the window; null: not read."
    )


class HostResources(ResourceAmounts):
    name = serializers.CharField()
    cpu_count = serializers.IntegerField(allow_null=True)
    memory_total_bytes = serializers.IntegerField(allow_null=True)
    memory_available_bytes = serializers.IntegerField(allow_null=True, help_text="Lowest in the window.")


class ResourceList(serializers.Serializer):
    services = ServiceResources(many=True)
    hosts = HostResources(many=True, help_text="Each host as a whole: every process, traced or not.")


class ResourceSeries(serializers.Serializer):
    minutes = serializers.ListField(child=serializers.DateTimeField(), help_text="UTC, oldest first.")
    cpu_percent = serializers.ListField(child=serializers.FloatField(allow_null=True))
    rss_bytes = serializers.ListField(child=serializers.IntegerField(allow_null=True))
    net_bytes_sent = serializers.ListField(child=serializers.IntegerField(allow_null=True))
    net_bytes_received = serializers.ListField(child=serializers.IntegerField(allow_null=True))
    disk_read_bytes = serializers.ListField(child=serializers.IntegerField(allow_null=True))
    disk_write_bytes = serializers.ListField(child=serializers.IntegerField(allow_null=True))
    disk_ops = serializers.ListField(child=serializers.IntegerField(allow_null=True))
    runq_wait_avg_ms = serializers.ListField(child=serializers.FloatField(allow_null=True))


class RequestList(serializers.Serializer):
    requests = serializers.ListField(
        child=serializers.DictField(),
        help_text="Record attributes (DESIGN.md: Records) plus the sample's id.",
    )


class TraceSpan(serializers.Serializer):
    span_id = serializers.CharField()
    parent_span_id = serializers.CharField(help_text="The linked caller's span, \"\" for the path's root.")
    trace_id = serializers.CharField(help_text="As recorded: from traceparent, else derived by the probe.")
    service = serializers.CharField()
    host = serializers.CharField()
    kind = serializers.ChoiceField(choices=["server", "client"])
    name = serializers.CharField(help_text="What was asked: `GET /users/{id}`, `SELECT users`.")
    depth = serializers.IntegerField()
    start = serializers.DateTimeField()
    start_offset_ms = serializers.FloatField(help_text="From the start of the path's first span.")
    duration_ms = serializers.FloatField()
    status_code = serializers.IntegerField()
    error = serializers.BooleanField()
    attributes = serializers.DictField(help_text="The record as received (redacted on the host).")


class Trace(serializers.Serializer):
    spans = TraceSpan(many=True)
    truncated = serializers.BooleanField(help_text="The path had more spans than are returned.")


class ProbeState(serializers.Serializer):
    desired = serializers.BooleanField(
        help_text="What the database says: switched here, in the admin or the API."
    )
    actual = serializers.BooleanField(
        allow_null=True, help_text="Running, as the agent last reported; null: not reported."
    )
    error = serializers.CharField(
        allow_null=True, help_text="Why it could not attach (for example no libssl found)."
    )
    throttled = serializers.CharField(
        allow_null=True, help_text="Why the worker switched it off over its CPU budget; null when it did not."
    )
    events_per_s = serializers.FloatField(allow_null=True)
    cpu_percent = serializers.FloatField(allow_null=True, help_text="Its BPF programs' CPU, % of one core.")


class HostSummary(serializers.Serializer):
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=["up", "stale", "down"])
    stopped = serializers.BooleanField(help_text="The worker said it was stopping: down at once.")
    last_seen = serializers.DateTimeField(allow_null=True, help_text="The last heartbeat; null: none yet.")
    agent_version = serializers.CharField()
    kernel = serializers.CharField()
    probes = serializers.DictField(child=ProbeState(), help_text='{"http": {...}, "tls": {...}, ...}')
    events_per_s = serializers.FloatField(allow_null=True, help_text="Null while the host is down.")
    dropped = serializers.IntegerField(help_text="Events the agent dropped since it started.")
    cpu_percent = serializers.FloatField(
        allow_null=True, help_text="The worker's CPU (user space and its BPF programs), % of one core."
    )
    cpu_budget_percent = serializers.FloatField(allow_null=True, help_text="Null: no budget.")


class HostList(serializers.Serializer):
    hosts = HostSummary(many=True)


class ProbeChanges(serializers.Serializer):
    """Documents PATCH /api/v1/hosts/<name>/probes: any of the probes, each true or false."""

    def get_fields(self):
        return {probe: serializers.BooleanField(required=False) for probe in schema.PROBES}


class HostSettings(serializers.Serializer):
    cpu_budget_percent = serializers.FloatField(
        allow_null=True,
        min_value=0,
        max_value=control.MAX_CPU_BUDGET_PERCENT,
        help_text="The worker's CPU budget in % of one core (above 0); null removes it.",
    )


class Health(serializers.Serializer):
    status = serializers.CharField()


class Problem(serializers.Serializer):
    detail = serializers.CharField()
