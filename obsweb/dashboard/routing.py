from django.urls import path

from obsweb.dashboard import consumers
from obsweb.dashboard.constants import HOSTS_SOCKET_PATH, OVERVIEW_SOCKET_PATH
from obsweb.incidents.constants import INCIDENTS_SOCKET_PATH
from obsweb.incidents.consumers import IncidentsConsumer

websocket_urlpatterns = [
    path(OVERVIEW_SOCKET_PATH.lstrip("/"), consumers.OverviewConsumer.as_asgi()),
    path(HOSTS_SOCKET_PATH.lstrip("/"), consumers.HostsConsumer.as_asgi()),
    path(INCIDENTS_SOCKET_PATH.lstrip("/"), IncidentsConsumer.as_asgi()),
]
