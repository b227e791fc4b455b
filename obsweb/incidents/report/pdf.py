"""The report's HTML printed to PDF by headless Chromium (Playwright), so the PDF shows the same
plotly charts as the HTML. The page may load nothing but its own file."""

import tempfile
from pathlib import Path

from django.conf import settings

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
VIEWPORT = {"width": 1100, "height": 1400}  # the charts are drawn this wide, then printed ...
PRINT_SCALE = 0.68  # ... at this scale, so 1100 px fit A4's printable width
READY_TIMEOUT_MS = 60_000


def render(html: bytes) -> bytes:
    from playwright.sync_api import sync_playwright  # imported here: only the report task prints

    chromium = Path(settings.REPORT_CHROMIUM)
    if not chromium.exists():
        raise FileNotFoundError(
            f"no Chromium at {chromium} to print the PDF: apt-get install chromium, or set REPORT_CHROMIUM"
        )
    with tempfile.TemporaryDirectory(prefix="obsweb-report-") as tmp:
        page_file = Path(tmp) / "report.html"
        page_file.write_bytes(html)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                page.route("**/*", _local_only)
                page.goto(page_file.as_uri(), wait_until="load")
                page.wait_for_function(
                    "document.body.dataset.chartsReady === 'true'", timeout=READY_TIMEOUT_MS
                )
                return page.pdf(
                    format="A4",
                    print_background=True,
                    scale=PRINT_SCALE,
                    margin={"top": "12mm", "bottom": "12mm", "left": "10mm", "right": "10mm"},
                )
            finally:
                browser.close()


def _local_only(route):
    if route.request.url.startswith("file:"):
        route.continue_()
    else:
        route.abort()
