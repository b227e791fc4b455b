"""Names the incidents app shares between models, evaluation, views, consumers and templates."""

# Metrics an alert rule can watch (AlertRule.metric). Service metrics read Rollup rows (TCP
# retransmits: TcpHealth rows); host metrics read Host heartbeats and DroppedEvents. Never raw
# request samples.
ERROR_RATE = "error_rate"
P50_LATENCY = "p50_ms"
P90_LATENCY = "p90_ms"
P99_LATENCY = "p99_ms"
THROUGHPUT_DROP = "throughput_drop"
STATUS_SHARE = "status_share"
# Stored key kept from when it meant "% of segments": we count no segments, so it now measures
# retransmits per 100 connections (TCP_RETRANSMITS_HELP).
TCP_RETRANSMIT_RATE = "tcp_retransmit_rate"
HOST_DOWN = "host_down"
AGENT_DROPS = "agent_drops"

METRIC_CHOICES = [
    (ERROR_RATE, "error rate (%)"),
    (P50_LATENCY, "p50 latency (ms)"),
    (P90_LATENCY, "p90 latency (ms)"),
    (P99_LATENCY, "p99 latency (ms)"),
    (THROUGHPUT_DROP, "throughput drop vs a baseline (%)"),
    (STATUS_SHARE, "status-code share (%)"),
    (TCP_RETRANSMIT_RATE, "TCP retransmits per 100 connections"),
    (HOST_DOWN, "host down (s without heartbeat)"),
    (AGENT_DROPS, "agent dropping events (events)"),
]
SERVICE_METRICS = (ERROR_RATE, P50_LATENCY, P90_LATENCY, P99_LATENCY, THROUGHPUT_DROP, STATUS_SHARE,
                   TCP_RETRANSMIT_RATE)  # fmt: skip
HOST_METRICS = (HOST_DOWN, AGENT_DROPS)
PERCENT_METRICS = (ERROR_RATE, THROUGHPUT_DROP, STATUS_SHARE)  # TCP retransmits may pass 100 per 100
LATENCY_QUANTILES = {P50_LATENCY: 0.5, P90_LATENCY: 0.9, P99_LATENCY: 0.99}
UNITS = {
    ERROR_RATE: "%",
    P50_LATENCY: "ms",
    P90_LATENCY: "ms",
    P99_LATENCY: "ms",
    THROUGHPUT_DROP: "% below baseline",
    STATUS_SHARE: "% of requests",
    TCP_RETRANSMIT_RATE: "retransmits per 100 connections",
    HOST_DOWN: "s without heartbeat",
    AGENT_DROPS: "events dropped",
}
# What a service metric's minimum counts (AlertRule.min_requests): requests, unless named here.
GATE_NOUNS = {TCP_RETRANSMIT_RATE: "connections"}
# How the TCP retransmit rule measures, said on the rules page and the rule form.
TCP_RETRANSMITS_HELP = (
    "TCP retransmits per 100 connections: 100 × retransmits / connections over the TCP edges a service "
    "is an end of, both directions, from the tcp probe's per-minute TCP health. Segments are not "
    "counted, so this is no share of segments and may pass 100. Connections are counted where a "
    "traced client closed them: an edge whose client is not traced (an external caller) has none and "
    "is left out. The rule's minimum applies to connections."
)
# Why a rule read nothing at all, when its metric has a likelier reason than an idle window.
NO_DATA_NOTES = {TCP_RETRANSMIT_RATE: "no TCP health records in the window: is the tcp probe on?"}

# Throughput drop compares the window with the same window this long before (AlertRule.baseline).
BASELINE_HOUR = "1h"
BASELINE_DAY = "1d"
BASELINE_CHOICES = [
    (BASELINE_HOUR, "the same window an hour before"),
    (BASELINE_DAY, "the same window a day before"),
]
BASELINE_SECONDS = {BASELINE_HOUR: 3600, BASELINE_DAY: 86400}

# What the last evaluation of a rule found (AlertRule.last_state).
RULE_OK = "ok"
RULE_FIRING = "firing"
RULE_NO_DATA = "no data"
RULE_NEVER = ""

# Incidents.
OPEN = "open"
RESOLVED = "resolved"
STATE_CHOICES = [(OPEN, "open"), (RESOLVED, "resolved")]
SUBJECT_SERVICE = "service"
SUBJECT_HOST = "host"
SUBJECT_CHOICES = [(SUBJECT_SERVICE, "service"), (SUBJECT_HOST, "host")]

# Timeline entries (IncidentEvent.kind).
EVENT_OPENED = "opened"
EVENT_FIRING = "firing"  # another rule fires for the same subject, or one fires again
EVENT_RULE_CLEAR = "rule_clear"  # one rule stopped firing, others still fire
EVENT_CLEAR = "clear"  # nothing fires any more: the grace period starts
EVENT_REFIRED = "refired"  # something fired again within the grace period
EVENT_RESOLVED = "resolved"
EVENT_ACKNOWLEDGED = "acknowledged"
EVENT_COMMENT = "comment"
EVENT_WEBHOOK_FAILED = "webhook_failed"
EVENT_REPORT = "report"
EVENT_CHOICES = [
    (EVENT_OPENED, "opened"),
    (EVENT_FIRING, "rule firing"),
    (EVENT_RULE_CLEAR, "rule clear"),
    (EVENT_CLEAR, "condition clear"),
    (EVENT_REFIRED, "fired again"),
    (EVENT_RESOLVED, "resolved"),
    (EVENT_ACKNOWLEDGED, "acknowledged"),
    (EVENT_COMMENT, "comment"),
    (EVENT_WEBHOOK_FAILED, "webhook failed"),
    (EVENT_REPORT, "report"),
]

# Outgoing webhooks (WebhookDelivery.status) and reports (Report.status, DESIGN.md: API).
PENDING = "pending"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
DELIVERED = "delivered"
WEBHOOK_STATUS_CHOICES = [(PENDING, "pending"), (DELIVERED, "delivered"), (FAILED, "failed")]
REPORT_STATUS_CHOICES = [(PENDING, "pending"), (RUNNING, "running"), (DONE, "done"), (FAILED, "failed")]
WEBHOOK_OPENED = "incident.opened"
WEBHOOK_RESOLVED = "incident.resolved"

# Report formats: (format, content type, file extension).
FORMAT_HTML = "html"
FORMAT_PDF = "pdf"
FORMAT_JSON = "json"
REPORT_FORMATS = {
    FORMAT_HTML: "text/html; charset=utf-8",
    FORMAT_PDF: "application/pdf",
    FORMAT_JSON: "application/json",
}
FORMAT_CHOICES = [(name, name) for name in REPORT_FORMATS]

# The banner on every page and report progress on the incident page travel on one group.
INCIDENTS_GROUP = "incidents"
INCIDENTS_SOCKET_PATH = "/ws/incidents/"
BANNER_SUBJECTS = 3  # the banner names this many open incidents' subjects, then "and n more"
