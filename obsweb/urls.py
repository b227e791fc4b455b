from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path

urlpatterns = [
    # Our pages say `<link rel="icon" href="data:,">`; the admin's do not, and a browser's
    # /favicon.ico 404 is noise in every console. No icon, no error.
    path("favicon.ico", lambda request: HttpResponse(status=204)),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("obsweb.api.urls")),
    path("", include("obsweb.incidents.urls")),
    path("", include("obsweb.dashboard.urls")),
]
