from django.urls import path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import IsAuthenticated

from obsweb.api import views

urlpatterns = [
    path("api/v1/services", views.ServiceListView.as_view(), name="api-services"),
    # path, not str: a service name (OTEL_SERVICE_NAME) may hold a slash.
    path("api/v1/services/<path:name>/endpoints", views.EndpointListView.as_view(), name="api-endpoints"),
    path("api/v1/edges", views.EdgeListView.as_view(), name="api-edges"),
    path("api/v1/requests", views.RequestListView.as_view(), name="api-requests"),
    path("api/v1/traces/<str:trace_id>", views.TraceView.as_view(), name="api-trace"),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]), name="api-schema"),
    path("healthz", views.HealthView.as_view(), name="healthz"),
]
