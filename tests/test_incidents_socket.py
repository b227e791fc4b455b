"""/ws/incidents/: the open-incidents banner and report progress reach logged-in pages; anonymous
sockets are closed with 4401."""

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

from obsweb.asgi import application
from obsweb.incidents import constants as c
from obsweb.incidents import evaluation, live
from obsweb.incidents.models import Incident, Report
from tests.incidents import only_rule
from tests.seed import seed_service

# Committed rows: the consumer's session lookup runs outside the test's transaction. (Tables are
# flushed between such tests, the default rules too: each test makes its own.)
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def redis_layer(settings, redis_url):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [redis_url]}}
    }
    settings.INCIDENT_WEBHOOK_URL = ""


def incidents_socket(session_key: str | None = None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    if session_key:
        headers.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={session_key}".encode()))
    return WebsocketCommunicator(application, c.INCIDENTS_SOCKET_PATH, headers=headers)


def session_of(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


def receive_after(session_key: str, action) -> dict:
    async def scenario():
        socket = incidents_socket(session_key)
        connected, _ = await socket.connect()
        assert connected
        await sync_to_async(action)()
        message = await socket.receive_json_from(timeout=5)
        await socket.disconnect()
        return message

    return async_to_sync(scenario)()


def test_it_closes_anonymous_sockets_with_4401(db):
    async def scenario():
        socket = incidents_socket()
        connected, _ = await socket.connect()
        assert connected
        closed = await socket.receive_output(timeout=3)
        await socket.wait()
        return closed

    assert async_to_sync(scenario)() == {"type": "websocket.close", "code": 4401}


def test_an_incident_opening_updates_every_pages_banner(personas):
    only_rule(metric=c.ERROR_RATE, threshold=5, min_requests=10)
    seed_service("checkout", requests=50, errors=10)

    message = receive_after(session_of(personas["viewer"]), evaluation.evaluate)

    assert message == {"type": "incidents", "open": 1, "subjects": ["checkout"]}


def test_report_progress_reaches_the_incident_page(personas):
    only_rule(metric=c.ERROR_RATE, threshold=5, min_requests=10)
    seed_service("checkout", requests=50, errors=10)
    evaluation.evaluate()
    report = Report.objects.create(incident=Incident.objects.get(), status=c.RUNNING, progress=40)

    message = receive_after(session_of(personas["staff"]), lambda: live.broadcast_report(report))

    assert message == {
        "type": "report",
        "report": report.pk,
        "incident": report.incident_id,
        "status": "running",
        "progress": 40,
    }
