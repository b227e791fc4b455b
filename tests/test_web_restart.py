"""The web process restarted: open pages reconnect their websocket by themselves, say so while
they cannot, take live updates again without a reload, and keep the new websocket while quiet.

Started the way `make run` starts it (Procfile): Redis with the users scripts/redis_acl.py writes,
daphne through scripts/wait-redis.sh logging in as the app's user, a SQLite file of its own. The
page is the overview in Debian's Chromium; static/obsweb/socket.js does the reconnecting and
static/obsweb/live.js shows it in #live-status.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from channels_redis.core import RedisChannelLayer
from playwright.sync_api import expect

from obsweb.dashboard.constants import OVERVIEW_SOCKET_PATH
from obsweb.incidents.constants import INCIDENTS_SOCKET_PATH
from tests import helpers
from tests.browser import LIVE_DEADLINE_MS, SHOTS, Web, chromium, log_in_as

SEED = (
    "from django.core.management import call_command\n"
    "call_command('migrate', verbosity=0)\n"
    "from django.contrib.auth.models import User\n"
    "from tests.seed import seed_service\n"
    "User.objects.create_user('viewer', password='viewer-pass')\n"
    "seed_service('checkout', host='web-1', requests=600, latency_ms=42)\n"
)
# What the ingester does after a commit: new rows, then one broadcast to the overview group.
TICK = (
    "import time\n"
    "from tests.seed import seed_service\n"
    "from obsweb.dashboard.live import broadcast_overview\n"
    "seed_service('inventory', host='web-3', requests=75, latency_ms=8)\n"
    "broadcast_overview(time.time_ns())\n"
)
DAPHNE = str(Path(sys.executable).with_name("daphne"))
# Every websocket the page opens, refused ones too: what socket.js does, as the page sees it.
RECORD_SOCKETS = """
window.__sockets = [];
window.WebSocket = class extends window.WebSocket {
  constructor(...args) { super(...args); window.__sockets.push(this); }
};
"""
# Per path: how many websockets the page opened, and whether the newest is open.
SOCKETS = """() => {
  const paths = {};
  for (const ws of window.__sockets) {
    const path = new URL(ws.url).pathname;
    const opened = (paths[path] ? paths[path].opened : 0) + 1;
    paths[path] = {opened: opened, open: ws.readyState === WebSocket.OPEN};
  }
  return paths;
}"""
# Longer than a consumer waits in Redis for its next message before asking again: the wait that
# ended every quiet page's websocket while redis-py read with a shorter timeout (settings.py).
QUIET_MS = (RedisChannelLayer.brpop_timeout + 1.5) * 1000
# socket.js retries after 1 s, 2 s, 4 s, 8 s (each +-25 %): the first retry after daphne listens
# again comes at most 1.25 x the backoff then, about 2.5 x the outage. Daphne listens ~2 s after
# it starts here (up to ~6 s on a busy machine).
RECONNECT_DEADLINE_MS = 20_000


class WebProcess:
    """daphne as the Procfile runs it, on one port, that the test can kill and start again."""

    def __init__(self, tmp_path: Path, redis_dir: Path):
        self.port = helpers.free_port()
        self.log_path = tmp_path / "daphne.log"
        self.redis_dir = redis_dir
        app_redis_url = (redis_dir / "obsweb.url").read_text().strip()
        env = os.environ | {
            "DJANGO_SETTINGS_MODULE": "obsweb.settings",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'obsweb.sqlite3'}",
            "REDIS_URL": app_redis_url,  # manage.py's; wait-redis.sh sets daphne's from the same file
            "SECRET_KEY": "web-restart-test-only",
            "DEBUG": "False",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",  # daphne's log is whole when a failing test prints it
        }
        self.web = Web(url=f"http://127.0.0.1:{self.port}", env=env)
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        """Start daphne; returns the seconds until it listened."""
        began = time.monotonic()
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                ["scripts/wait-redis.sh", "obsweb", DAPHNE, "-b", "127.0.0.1", "-p", str(self.port)]
                + ["obsweb.asgi:application"],
                cwd=helpers.REPO,
                env=self.web.env | {"OBSWEB_REDIS_DIR": str(self.redis_dir)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        helpers.wait_for_port(self.port, timeout=30)
        return time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL, as the OOM killer would: the page gets no websocket close frame (code 1006)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            helpers.stop(self.proc)


@pytest.fixture
def web_process(tmp_path, acl_redis):
    process = WebProcess(tmp_path, acl_redis)
    process.web.shell(SEED)  # migrates first: one Django start fewer
    process.start()
    try:
        yield process
    finally:
        process.stop()
        with contextlib.suppress(OSError):
            print(process.log_path.read_text(errors="replace")[-4000:])  # shown when the test fails


@pytest.fixture
def page():
    with chromium() as browser:
        yield browser.new_page(viewport={"width": 1280, "height": 800})


def websockets(page) -> dict:
    return page.evaluate(f"({SOCKETS})()")


def wait_until_every_socket_is_open(page, timeout_ms: float) -> None:
    page.wait_for_function(
        f"paths => {{ const now = ({SOCKETS})(); return paths.every(p => now[p] && now[p].open); }}",
        arg=[OVERVIEW_SOCKET_PATH, INCIDENTS_SOCKET_PATH],
        timeout=timeout_ms,
    )


def test_the_overview_reconnects_by_itself_after_the_web_process_is_killed(web_process, page):
    page.add_init_script(RECORD_SOCKETS)
    log_in_as(page, web_process.web.url, "viewer", "viewer-pass")
    status = page.locator("#live-status")
    expect(status).to_have_text("live")
    expect(page.locator("#services")).to_contain_text("checkout")
    page.evaluate("window.__loadedOnce = true")

    web_process.kill()
    killed_at = time.monotonic()

    expect(status).to_have_text("reconnecting")
    expect(status).to_have_class("live-status reconnecting")
    page.screenshot(path=str(SHOTS / "overview-reconnecting.png"))
    listening_s = web_process.start()
    restarted_at = time.monotonic()
    expect(status).to_have_text("live", timeout=RECONNECT_DEADLINE_MS)
    live_at = time.monotonic()
    print(
        f"outage {live_at - killed_at:.1f} s: daphne listened again {listening_s:.1f} s after start, "
        f"page live {live_at - restarted_at:.1f} s after that; websockets opened: {websockets(page)}"
    )

    web_process.web.shell(TICK)

    row = page.locator("#services tbody tr", has_text="inventory")
    expect(row).to_be_visible(timeout=LIVE_DEADLINE_MS)
    expect(row).to_contain_text("web-3")
    assert page.evaluate("window.__loadedOnce") is True, "the page reloaded instead of reconnecting"
    assert websockets(page)[OVERVIEW_SOCKET_PATH]["opened"] >= 2

    # And it keeps its websockets while nothing happens for longer than a consumer waits in
    # Redis for its next message at a time.
    wait_until_every_socket_is_open(page, RECONNECT_DEADLINE_MS)  # the banner's reconnects on its own
    reconnected = websockets(page)
    page.wait_for_timeout(QUIET_MS)
    assert websockets(page) == reconnected
    expect(status).to_have_text("live")
