from django.urls import path

from obsweb.dashboard import consumers
from obsweb.dashboard.constants import OVERVIEW_SOCKET_PATH

websocket_urlpatterns = [
    path(OVERVIEW_SOCKET_PATH.lstrip("/"), consumers.OverviewConsumer.as_asgi()),
]
