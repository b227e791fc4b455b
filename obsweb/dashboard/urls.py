from django.urls import path

from obsweb import converters  # noqa: F401  (registers <captured:...>)
from obsweb.dashboard import host_views, resource_views, views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("map/", views.service_map, name="map"),
    # Names may hold "/" (encodeURIComponent sends it as %2F) and line breaks (%0A).
    path("services/<captured:name>/paths/<int:endpoint_id>/", views.endpoint_paths, name="endpoint-paths"),
    path("services/<captured:name>/series.json", views.service_series, name="service-series"),
    path("services/<captured:name>/", views.service_detail, name="service"),
    path("traces/<captured:trace_id>/", views.trace_detail, name="trace"),
    path("resources/", resource_views.resources_page, name="resources"),
    path("hosts/", host_views.hosts_page, name="hosts"),
    path("hosts/rows/", host_views.hosts_rows, name="hosts-rows"),
    path("hosts/probes/", host_views.set_probe, name="host-probe"),
    path("hosts/probes/all/", host_views.set_probe_everywhere, name="hosts-probe"),
    path("hosts/budget/", host_views.set_budget, name="host-budget"),
    path("hosts/audit/", host_views.audit_log, name="audit"),
    path("hosts/audit.csv", host_views.audit_csv, name="audit-csv"),
    path("hosts/redaction/", host_views.redaction_policy, name="redaction"),
]
