import contextlib
import os

import pytest

from tests import helpers

SHARED_STACK = "shared_stack"
_shared = contextlib.ExitStack()  # holds the shared stack while its users run
_shared_stack = None


def pytest_collection_modifyitems(config, items):
    """The tests on the shared stack run first, together, so it can stop before any other stack
    starts (two probe workers would each trace the other's traffic). BPF tests skip without root;
    with OBSWEB_REQUIRE_BPF=1 (make test) they must run."""
    items.sort(key=lambda item: SHARED_STACK not in item.fixturenames)  # stable: keeps file order
    if os.geteuid() == 0:
        return
    if os.environ.get("OBSWEB_REQUIRE_BPF") == "1":
        raise pytest.UsageError("OBSWEB_REQUIRE_BPF=1 but not root: BPF tests cannot run")
    skip = pytest.mark.skip(reason="needs root to load BPF programs")
    for item in items:
        if "bpf" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_stack():
    """One obsweb stack with its probe worker for the end-to-end modules that only add their own,
    uniquely named services and check those: starting a stack costs 15-25 s, mostly compiling
    the BPF programs. It stops after the last test using it (pytest_runtest_teardown)."""
    global _shared_stack
    if _shared_stack is None:
        from tests.stack import obsweb_stack

        _shared_stack = _shared.enter_context(obsweb_stack())
    return _shared_stack


@pytest.hookimpl(trylast=True)  # after the modules' own fixtures (their servers) are torn down
def pytest_runtest_teardown(item, nextitem):
    global _shared_stack
    if SHARED_STACK in item.fixturenames and (nextitem is None or SHARED_STACK not in nextitem.fixturenames):
        _shared.close()
        _shared_stack = None


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory):
    """Redis as `make run` starts it: a redis-server started by scripts/run-redis.sh with the
    users scripts/redis_acl.py wrote; yields the directory holding the users' files."""
    import subprocess
    import sys

    directory = tmp_path_factory.mktemp("make-run") / "redis"
    env = os.environ | {"OBSWEB_REDIS_PORT": str(helpers.free_port()), "OBSWEB_REDIS_DIR": str(directory)}
    subprocess.run(
        [sys.executable, "scripts/redis_acl.py", str(directory)], cwd=helpers.REPO, env=env, check=True
    )
    server = subprocess.Popen(["scripts/run-redis.sh"], cwd=helpers.REPO, env=env, stdout=subprocess.DEVNULL)
    try:
        helpers.wait_for_port(int((directory / "port").read_text()))
        yield directory
    finally:
        helpers.stop(server)


@pytest.fixture(scope="session")
def redis_url():
    with helpers.redis_server() as url:
        yield url


@pytest.fixture
def stream(redis_url, settings, db):
    """A Redis with an empty records stream, wired as the ingester's and the channel layer's (the
    ingester broadcasts live updates)."""
    import redis

    settings.REDIS_URL = redis_url
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [redis_url]}}
    }
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def control_redis(settings, redis_url):
    """The web app's Redis (settings.REDIS_URL) pointed at the test server, emptied; a client on it
    that reads the control hashes as text."""
    import redis

    settings.REDIS_URL = redis_url
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def control_channel(control_redis):
    """Subscribed to the control channel before the test acts; call it for the host names
    published since (waiting up to `wait_s` for the first)."""
    from probes import schema

    pubsub = control_redis.pubsub()
    pubsub.subscribe(schema.CONTROL_CHANNEL)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"

    def published(wait_s: float = 2.0) -> list[str]:
        names = []
        while (message := pubsub.get_message(timeout=wait_s if not names else 0.2)) is not None:
            names.append(message["data"])
        return names

    yield published
    pubsub.close()


@pytest.fixture
def personas(db):
    """Three users as in every view test: staff (may change things), viewer (may look), outsider (none)."""
    from django.contrib.auth.models import User

    staff = User.objects.create_user("staff", password="staff-pass", is_staff=True)
    viewer = User.objects.create_user("viewer", password="viewer-pass")
    return {"staff": staff, "viewer": viewer, "outsider": None}
