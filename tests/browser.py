"""What every browser test shares: Debian's Chromium driven by Playwright (no browser download is
possible here), and a daphne serving a migrated, seeded SQLite database on a free port."""

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from tests import helpers

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Tests reach loopback only: no DNS lookups (a name resolves to nothing) and no probes of
    # Google's public DNS, which the service map would otherwise show as external peers.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--dns-over-https-mode=off",
    "--disable-features=AsyncDns,DnsOverHttps",
]
SHOTS = Path("/tmp/obsweb-shots")
HOSTILE = "<img src=x onerror=window.__xss=1>"
LIVE_DEADLINE_MS = 5000
VIEWPORT = {"width": 1440, "height": 900}


@contextlib.contextmanager
def chromium():
    """A headless Chromium, closed on the way out whatever the test did."""
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def log_in_as(page, base_url: str, user: str, password: str, next_path: str = "/") -> None:
    """Through the login form, as a person would; lands on `next_path`."""
    page.goto(base_url + next_path)
    page.fill("#id_username", user)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    expect(page).to_have_url(base_url + next_path)


@dataclass
class Web:
    url: str
    env: dict

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=helpers.REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def shell(self, code: str) -> str:
        return self.manage("shell", "-c", code)


@contextlib.contextmanager
def seeded_web(tmp_path, redis_url: str, seed: str, **settings: str):
    """Migrate a fresh SQLite file, run `seed` in `manage.py shell`, then serve it with daphne.
    `settings` are extra environment variables for both."""
    env = os.environ | {
        "DJANGO_SETTINGS_MODULE": "obsweb.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'obsweb.sqlite3'}",
        "REDIS_URL": redis_url,
        "SECRET_KEY": "browser-test-only",
        "DEBUG": "False",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        **settings,
    }
    port = helpers.free_port()
    web = Web(url=f"http://127.0.0.1:{port}", env=env)
    web.manage("migrate", "--noinput", "-v", "0")
    web.shell(seed)
    log = (tmp_path / "daphne.log").open("w")
    daphne = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "obsweb.asgi:application"],
        cwd=helpers.REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        helpers.wait_for_port(port, timeout=30)
        yield web
    finally:
        helpers.stop(daphne)
        log.close()
