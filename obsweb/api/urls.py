from django.urls import path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import IsAuthenticated

from obsweb import converters  # noqa: F401  (registers <captured:...>)
from obsweb.api import incidents, metrics, views

urlpatterns = [
    path("api/v1/services", views.ServiceListView.as_view(), name="api-services"),
    # path, not str: a service name (OTEL_SERVICE_NAME) may hold a slash.
    path("api/v1/services/<captured:name>/endpoints", views.EndpointListView.as_view(), name="api-endpoints"),
    path(
        "api/v1/services/<captured:name>/resources",
        views.ServiceResourcesView.as_view(),
        name="api-service-resources",
    ),
    path("api/v1/edges", views.EdgeListView.as_view(), name="api-edges"),
    path("api/v1/resources", views.ResourceListView.as_view(), name="api-resources"),
    path("api/v1/requests", views.RequestListView.as_view(), name="api-requests"),
    path("api/v1/traces/<captured:trace_id>", views.TraceView.as_view(), name="api-trace"),
    path("api/v1/hosts", views.HostListView.as_view(), name="api-hosts"),
    path("api/v1/hosts/<captured:name>/probes", views.HostProbesView.as_view(), name="api-host-probes"),
    path("api/v1/hosts/<captured:name>", views.HostView.as_view(), name="api-host"),
    path("api/v1/incidents", incidents.IncidentListView.as_view(), name="api-incidents"),
    path("api/v1/incidents/<int:incident_id>", incidents.IncidentView.as_view(), name="api-incident"),
    path(
        "api/v1/incidents/<int:incident_id>/acknowledge",
        incidents.IncidentAcknowledgeView.as_view(),
        name="api-incident-acknowledge",
    ),
    path(
        "api/v1/incidents/<int:incident_id>/comments",
        incidents.IncidentCommentView.as_view(),
        name="api-incident-comments",
    ),
    path(
        "api/v1/incidents/<int:incident_id>/reports",
        incidents.IncidentReportsView.as_view(),
        name="api-incident-reports",
    ),
    path("api/v1/reports/<int:report_id>", incidents.ReportView.as_view(), name="api-report"),
    path(
        "api/v1/reports/<int:report_id>/<str:fmt>",
        incidents.ReportDownloadView.as_view(),
        name="api-report-download",
    ),
    path("api/v1/alert-rules", incidents.AlertRuleListView.as_view(), name="api-alert-rules"),
    path("api/v1/alert-rules/<int:rule_id>", incidents.AlertRuleView.as_view(), name="api-alert-rule"),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]), name="api-schema"),
    path("healthz", views.HealthView.as_view(), name="healthz"),
    path("metrics", metrics.metrics, name="metrics"),
]
