"""ws/hosts/: a tick when heartbeats arrive, and probe changes from staff only."""

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

from obsweb.asgi import application
from obsweb.dashboard.live import broadcast_hosts
from obsweb.fleet.models import AuditEntry, Host
from probes import schema

# Committed rows: the consumer reads sessions and hosts on other threads and connections.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def redis_layer(settings, redis_url, control_redis):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # personas, fast
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [redis_url]}}
    }


def hosts_socket(session_key: str | None = None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    if session_key:
        headers.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={session_key}".encode()))
    return WebsocketCommunicator(application, "/ws/hosts/", headers=headers)


def session_of(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


def exchange(session_key: str, message: dict) -> dict:
    """Send one message on a fresh socket; the answer."""

    async def scenario():
        socket = hosts_socket(session_key)
        assert (await socket.connect())[0]
        await socket.send_json_to(message)
        answer = await socket.receive_json_from(timeout=5)
        await socket.disconnect()
        return answer

    return async_to_sync(scenario)()


def set_http_off(host: str = "web-1") -> dict:
    return {"action": "set_probes", "host": host, "probes": {"http": False}}


def test_it_closes_anonymous_sockets_with_4401(db):
    async def scenario():
        socket = hosts_socket()
        assert (await socket.connect())[0]
        closed = await socket.receive_output(timeout=3)
        await socket.wait()
        return closed

    assert async_to_sync(scenario)() == {"type": "websocket.close", "code": 4401}


def test_staff_switch_a_probe_over_the_socket(personas, control_redis, control_channel):
    Host.objects.create(name="web-1")

    answer = exchange(session_of(personas["staff"]), set_http_off())

    assert answer == {
        "type": "applied",
        "host": "web-1",
        "probes": dict.fromkeys(schema.PROBES, True) | {"http": False},
    }
    assert not Host.objects.get(name="web-1").wants("http")
    assert control_redis.hget(schema.control_key("web-1"), "http") == "0"
    assert control_channel() == ["web-1"]
    assert AuditEntry.objects.get().actor == "staff"


def test_a_viewer_is_refused_and_nothing_changes(personas, control_redis):
    Host.objects.create(name="web-1")

    answer = exchange(session_of(personas["viewer"]), set_http_off())

    assert answer == {"type": "error", "detail": "only staff may change probes"}
    assert Host.objects.get(name="web-1").desired_probes == {}
    assert not AuditEntry.objects.exists()
    assert control_redis.exists(schema.control_key("web-1")) == 0


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        (set_http_off("nope"), "no host named 'nope'"),
        ({"action": "set_probes", "host": "web-1", "probes": {"htp": False}}, "unknown probe 'htp'"),
        ({"action": "reboot", "host": "web-1"}, 'unknown action; send "action": "set_probes"'),
    ],
)
def test_a_bad_message_is_answered_with_an_error(personas, message, detail):
    Host.objects.create(name="web-1")
    answer = exchange(session_of(personas["staff"]), message)
    assert answer["type"] == "error"
    assert answer["detail"].startswith(detail)
    assert Host.objects.get(name="web-1").desired_probes == {}


def test_every_open_hosts_page_gets_a_tick_when_heartbeats_arrive(personas):
    viewer_key, staff_key = session_of(personas["viewer"]), session_of(personas["staff"])

    async def scenario():
        sockets = [hosts_socket(viewer_key), hosts_socket(staff_key)]
        for socket in sockets:
            assert (await socket.connect())[0]
        await sync_to_async(broadcast_hosts)()
        received = [await socket.receive_json_from(timeout=5) for socket in sockets]
        for socket in sockets:
            await socket.disconnect()
        return received

    assert [message["type"] for message in async_to_sync(scenario)()] == ["hosts", "hosts"]
