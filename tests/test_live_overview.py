import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

from obsweb.asgi import application
from obsweb.dashboard.live import broadcast_overview
from obsweb.dashboard.tasks import refresh_live_overview
from obsweb.telemetry.aggregate import apply_records
from tests.factories import agent, now_ns
from tests.seed import seed_service

# Committed rows: the consumer's session lookup and broadcast_overview run outside the test's
# transaction on databases whose connections channels closes between calls.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def redis_layer(settings, redis_url):
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [redis_url]}}
    }


def overview_socket(session_key: str | None = None) -> WebsocketCommunicator:
    """A browser-like connection through the full ASGI stack (origin check, session auth)."""
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    if session_key:
        headers.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={session_key}".encode()))
    return WebsocketCommunicator(application, "/ws/overview/", headers=headers)


def session_of(user) -> str:
    """A fresh session for `user`: logging a second user into one client would end the first's."""
    client = Client()
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


def test_it_closes_anonymous_sockets_with_4401(personas):
    async def scenario():
        socket = overview_socket()
        connected, _ = await socket.connect()
        assert connected
        closed = await socket.receive_output(timeout=3)
        await socket.wait()
        return closed

    assert async_to_sync(scenario)() == {"type": "websocket.close", "code": 4401}


def test_it_pushes_the_services_table_to_a_logged_in_viewer(personas):
    seed_service("checkout", requests=300, errors=3)
    session_key = session_of(personas["viewer"])

    async def scenario():
        socket = overview_socket(session_key)
        connected, _ = await socket.connect()
        assert connected
        await sync_to_async(broadcast_overview)(1_700_000_000_123_456_789)
        message = await socket.receive_json_from(timeout=5)
        await socket.disconnect()
        return message

    before_ns = time.time_ns()
    message = async_to_sync(scenario)()

    assert message["type"] == "services"
    assert message["latest_ts_ns"] == 1_700_000_000_123_456_789
    assert before_ns <= message["sent_at_ns"] <= time.time_ns()
    (checkout,) = message["services"]
    assert checkout["name"] == "checkout"
    assert checkout["requests"] == 300
    assert checkout["errors"] == 3
    assert checkout["hosts"] == ["web-1"]


def test_it_sends_one_message_per_broadcast_to_every_open_page(personas):
    seed_service("checkout")
    viewer_key = session_of(personas["viewer"])
    staff_key = session_of(personas["staff"])

    async def scenario():
        sockets = [overview_socket(viewer_key), overview_socket(staff_key)]
        for socket in sockets:
            assert (await socket.connect())[0]
        await sync_to_async(broadcast_overview)(1)
        received = [await socket.receive_json_from(timeout=5) for socket in sockets]
        extra = [await socket.receive_nothing(timeout=0.3) for socket in sockets]
        for socket in sockets:
            await socket.disconnect()
        return received, extra

    received, nothing_more = async_to_sync(scenario)()
    assert [m["type"] for m in received] == ["services", "services"]
    assert nothing_more == [True, True]


def test_it_pushes_the_hosts_strip_and_warnings_with_the_table(personas):
    hostile = "<b>web-1</b>"
    apply_records(
        [
            agent(host=hostile, ts=now_ns(7)),
            agent(host=hostile, ts=now_ns(2), **{"agent.events_dropped": 12, "agent.records_dropped": 3}),
        ]
    )
    session_key = session_of(personas["viewer"])

    async def scenario():
        socket = overview_socket(session_key)
        assert (await socket.connect())[0]
        await sync_to_async(refresh_live_overview)()  # Celery beat's tick: no new record needed
        message = await socket.receive_json_from(timeout=5)
        await socket.disconnect()
        return message

    message = async_to_sync(scenario)()

    assert message["type"] == "services"
    assert message["latest_ts_ns"] is None
    (host,) = message["hosts"]
    assert (host["name"], host["status"], host["dropped"]) == (hostile, "up", 15)
    assert "agent 0.1.0" in host["title"]
    (warning,) = message["warnings"]
    assert warning["kind"] == "dropped"
    assert warning["text"].startswith(f"agent on {hostile} dropped 15 events since ")
