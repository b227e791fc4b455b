"""Screenshots of every dashboard page, from the real stack tracing a known shop.

    .venv/bin/python scripts/screenshots.py [--minutes 3] [--full-page] [--out DIR] [--demo]

Needs root (the probe loads BPF programs), Debian's chromium and the test requirements. Starts
the whole stack and the shop of tests/servers/shop.py (frontend -> api -> PostgreSQL and Redis),
sends it traffic for a few minutes so the per-minute charts have several points, then saves a
1440x900 screenshot of each page into docs/screenshots/<page>.png (--full-page: the whole
page, for reviewing what is below the fold). Pages that do not exist in
this checkout (a 404) are skipped and reported. The probe sees the whole host: other traffic
running at the same time shows up in the pictures too.

--demo shoots the demo shop of `make demo` instead (demo/run.py: web -> shop-api -> PostgreSQL and
Redis, a stream worker, its own load and 5xx bursts), with Celery evaluating alert rules, so the
pictures show what a new user sees; these are the README's "Five-minute tour".
"""

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from playwright.sync_api import expect  # noqa: E402

from tests.browser import VIEWPORT, chromium, log_in_as  # noqa: E402
from tests.servers.shop import FRONTEND, Customer, shop  # noqa: E402
from tests.stack import obsweb_stack  # noqa: E402
from tests.test_e2e_pipeline import wait_until  # noqa: E402

OUT = REPO / "docs" / "screenshots"
CHECKOUTS_PER_SECOND = 2
BOOM_EVERY_S = 15
MAKE_ADMIN = (
    "from django.contrib.auth.models import User; "
    "User.objects.filter(username='e2e').update(is_staff=True, is_superuser=True)"
)


def drive(the_shop, minutes: float) -> None:
    """Checkouts at a steady rate and a failing request now and then, for `minutes`."""
    customer = Customer(the_shop)
    try:
        end = time.monotonic() + minutes * 60
        next_boom = time.monotonic()
        while time.monotonic() < end:
            started = time.monotonic()
            customer.shop(checkouts=1, booms=1 if started >= next_boom else 0)
            if started >= next_boom:
                next_boom = started + BOOM_EVERY_S
            time.sleep(max(0.0, 1 / CHECKOUTS_PER_SECOND - (time.monotonic() - started)))
    finally:
        customer.close()


def pages(stack, the_shop) -> list[tuple[str, str]]:
    """(file name, path) of each page to shoot, the trace of one of the slowest checkouts included."""
    found = [
        ("overview", "/"),
        ("map", "/map/"),
        ("resources", "/resources/"),
        ("service-frontend", f"/services/{FRONTEND}/"),
        ("service-api", "/services/api/"),
        ("service-postgres", f"/services/{quote(the_shop.postgres)}/"),
        ("service-redis", f"/services/{quote(the_shop.redis)}/"),
    ]
    slow = stack.api("/api/v1/requests", service=FRONTEND, min_duration_ms=100, limit=200)["requests"]
    checkouts = [r for r in slow if r.get("http.route") == "/checkout" and r.get("span.kind") == "server"]
    if checkouts:
        # One of the slowest, not the slowest: that is the first, which also opened connections.
        slow_first = sorted(checkouts, key=lambda r: r["duration_ns"], reverse=True)
        found.append(("trace", f"/traces/{slow_first[len(slow_first) // 10]['trace_id']}/"))
    checkout = [e for e in stack.endpoints(FRONTEND) if e.get("route") == "/checkout"]
    if checkout and "id" in checkout[0]:
        found.append(("paths", f"/services/{FRONTEND}/paths/{checkout[0]['id']}/"))
    return found + [("hosts", "/hosts/"), ("incidents", "/incidents/"), ("admin", "/admin/")]


def shoot(stack, targets: list[tuple[str, str]], out: Path, full_page: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        problems = []
        page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        log_in_as(page, stack.web, "e2e", "e2e-pass")
        for name, path in targets:
            problems.clear()
            response = page.goto(stack.web + path)
            if response.status == 404:
                print(f"skipped {name}: {path} is 404 in this checkout")
                continue
            for chart in page.locator(".js-plotly-plot").all():
                expect(chart.locator(".main-svg").first).to_be_attached()
            page.wait_for_timeout(1500)  # the overview's first live update, plotly's transitions
            page.screenshot(path=str(out / f"{name}.png"), full_page=full_page)
            status = "" if response.status == 200 else f" (answered {response.status})"
            print(f"saved {out / name}.png for {path}{status}", *problems, sep="\n  ")


def demo_pages(stack, names: dict) -> list[tuple[str, str]]:
    """(file name, path) of each page of the demo's stack, one slow web request's path included."""
    found = [("overview", "/"), ("map", "/map/"), ("resources", "/resources/")]
    found += [(f"service-{name}", f"/services/{quote(names[name], safe='')}/") for name in names]
    slow = stack.api("/api/v1/requests", service=names["web"], min_duration_ms=50, limit=200)["requests"]
    served = sorted((r for r in slow if r.get("span.kind") == "server"), key=lambda r: -r["duration_ns"])
    if served:
        found.append(("trace", f"/traces/{served[len(served) // 10]['trace_id']}/"))
    incidents = stack.api("/api/v1/incidents")["incidents"]
    found += [("incidents", "/incidents/")] + [("incident", f"/incidents/{i['id']}/") for i in incidents[:1]]
    return found + [("hosts", "/hosts/")]


def shoot_demo(args) -> None:
    from tests.test_e2e_demo import SERVICES, start_celery, start_demo

    demo_dir = Path(tempfile.mkdtemp(prefix="obsweb-demo-"))
    demo_dir.chmod(0o755)  # the postgres user writes its cluster there
    try:
        with obsweb_stack() as stack:
            stack.manage("shell", "-c", MAKE_ADMIN)
            start_celery(stack)
            demo, state = start_demo(stack, demo_dir)
            print(f"stack on {stack.web}; the demo runs for {args.minutes:g} min")
            time.sleep(args.minutes * 60)
            names = {name: state["services"][name] for name in SERVICES}
            shoot(stack, demo_pages(stack, names), args.out, args.full_page)
            demo.send_signal(signal.SIGINT)
            demo.wait(timeout=30)
    finally:
        shutil.rmtree(demo_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3, help="how long to send traffic first")
    parser.add_argument("--full-page", action="store_true", help="the whole page, not the first 900 px")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to save (default {OUT})")
    parser.add_argument("--demo", action="store_true", help="the demo shop of `make demo`, not the test shop")
    args = parser.parse_args()
    if args.demo:
        shoot_demo(args)
        return
    with obsweb_stack() as stack, shop() as the_shop:
        stack.manage("shell", "-c", MAKE_ADMIN)
        print(f"stack on {stack.web}; sending traffic for {args.minutes:g} min")
        drive(the_shop, args.minutes)

        def shop_seen():
            names = {s["name"] for s in stack.api("/api/v1/services")["services"]}
            return set(the_shop.services) <= names

        wait_until(shop_seen, "the shop's services in the API", stack)
        time.sleep(2)  # the last batch into the rollups
        shoot(stack, pages(stack, the_shop), args.out, args.full_page)


if __name__ == "__main__":
    main()
