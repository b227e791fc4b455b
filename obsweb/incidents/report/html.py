"""The report as one self-contained HTML file: CSS, plotly.js and the drawing scripts inlined, the
data in JSON islands, no URL the browser would fetch (a Content-Security-Policy of default-src
'none' makes sure), so it opens offline, from a mail attachment or an air-gapped laptop."""

import re

from django.contrib.staticfiles import finders
from django.template.loader import render_to_string

from obsweb.dashboard import formats

CSS = "obsweb/report.css"
SCRIPTS = ("plotly/plotly.min.js", "obsweb/plot_text.js", "obsweb/map.js", "obsweb/report.js")
MAP_SCRIPT = "obsweb/map.js"
ASSET_MARKER = "/*obsweb-report-asset-{}*/"  # where a script goes; a JS comment, should it stay
# The small charts per service of the TCP health and resource use sections: (kind report.js draws,
# what it shows).
TCP_CHARTS = [
    ("tcp-connections", "TCP connections per minute"),
    ("tcp-failures", "Failed connects per minute"),
    ("tcp-retransmits", "Retransmits per minute"),
    ("tcp-resets", "Resets sent and received per minute"),
    ("tcp-rtt", "Mean RTT per minute"),
]
RESOURCE_CHARTS = [
    ("cpu", "CPU in % of one core per minute"),
    ("memory", "Resident memory per minute"),
    ("network", "Network bytes sent and received per minute"),
    ("disk", "Disk bytes read and written per minute"),
    ("runq", "Mean run-queue wait per minute"),
]


def asset(name: str) -> bytes:
    """A static file, from wherever the dashboard serves it (plotly from its package)."""
    path = finders.find(name)
    if path is None:
        raise FileNotFoundError(f"static file {name} not found: the report inlines it (STATICFILES_DIRS)")
    with open(path, "rb") as f:
        data = f.read()
    closing = rb"</style" if name.endswith(".css") else rb"</script"
    if re.search(closing, data, re.IGNORECASE):  # it would end its inline element early
        raise ValueError(f"{name} contains {closing.decode()}>: it cannot be inlined")
    return data


def render(contents: dict) -> bytes:
    """The report page, UTF-8. The scripts (plotly.js alone is 4.6 MiB) are spliced in as bytes
    after the template has rendered, not passed through it: the engine would copy them many times."""
    summary, incident = contents["summary"], contents["incident"]
    subject = summary["subject_totals"]
    map_data = contents["service_map"] | {"static": True}  # map.js: no links to dashboard pages
    scripts = [name for name in SCRIPTS if name != MAP_SCRIPT or map_data["nodes"]]  # map.js needs a map
    context = {
        "r": contents,
        "incident": incident,
        "summary": summary,
        "figures": _figures(subject, summary["during_incident"]),
        "charts": contents["charts"],
        "tcp_charts": TCP_CHARTS,
        "resource_charts": RESOURCE_CHARTS,
        "chart_data": {
            "charts": contents["charts"],
            "tcp": contents["tcp_health"]["charts"],
            "resources": contents["resource_use"]["charts"],
            # The band the charts shade: the incident, from opening to resolution (or the report).
            "band": [incident["opened_at"], incident["resolved_at"] or contents["window"]["until"]],
        },
        "map_data": map_data,
        "css": asset(CSS).decode(),
        "scripts": [{"name": name, "marker": ASSET_MARKER.format(i)} for i, name in enumerate(scripts)],
    }
    page = render_to_string("incidents/report.html", context).encode()
    parts = []
    for i, name in enumerate(scripts):
        before, page = page.split(ASSET_MARKER.format(i).encode(), 1)
        parts += [before, asset(name)]
    return b"".join([*parts, page])


def _figures(totals: dict | None, during: dict | None) -> list[dict]:
    """The headline numbers, each with a stable id (tests and readers find them by it)."""
    figures = []
    if totals:
        figures += [
            {"id": "requests", "label": "Requests", "value": formats.count(totals["requests"])},
            {"id": "errors", "label": "Errors (5xx)", "value": formats.count(totals["errors"])},
            {"id": "error-rate", "label": "Error rate %", "value": formats.percent(totals["error_rate"])},
            {"id": "client-errors", "label": "4xx", "value": formats.count(totals["client_errors"])},
            {"id": "p50", "label": "p50 ms", "value": formats.ms(totals["p50_ms"])},
            {"id": "p99", "label": "p99 ms", "value": formats.ms(totals["p99_ms"])},
        ]
    if during:
        figures += [
            {
                "id": "incident-requests",
                "label": "Requests while open",
                "value": formats.count(during["requests"]),
            },
            {"id": "incident-errors", "label": "Errors while open", "value": formats.count(during["errors"])},
        ]
    return figures
