"""One report, built: contents, then HTML, JSON and PDF, with progress told along the way."""

import json
import logging

from obsweb.incidents import constants as c
from obsweb.incidents.models import Incident
from obsweb.incidents.report import contents, html, pdf, schema

log = logging.getLogger(__name__)


def build(incident: Incident, progress) -> tuple[dict[str, bytes], str]:
    """({format: bytes}, why the PDF is missing or ""). The PDF needs Chromium; without it the
    HTML and JSON are still worth having, so its failure is reported rather than fatal."""
    document = contents.build(incident, progress)
    progress(65, "checking the JSON against its schema")
    schema.validate(document)
    files = {c.FORMAT_JSON: json.dumps(document, indent=1, ensure_ascii=False).encode()}
    progress(70, "writing the HTML")
    page = files[c.FORMAT_HTML] = html.render(document)
    progress(80, "printing the PDF")
    try:
        files[c.FORMAT_PDF] = pdf.render(page)
    except Exception as exc:  # Chromium missing or crashed: keep what we have, say what is not
        log.exception("report PDF for incident %s failed", incident.pk)
        return files, f"PDF not made: {type(exc).__name__}: {exc}"[:2000]
    return files, ""
