from django.urls import path

from obsweb.dashboard import views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("map/", views.service_map, name="map"),
    # path: captured names may hold "/" (encodeURIComponent sends it as %2F).
    path("services/<path:name>/paths/<int:endpoint_id>/", views.endpoint_paths, name="endpoint-paths"),
    path("services/<path:name>/series.json", views.service_series, name="service-series"),
    path("services/<path:name>/", views.service_detail, name="service"),
    path("traces/<str:trace_id>/", views.trace_detail, name="trace"),
]
