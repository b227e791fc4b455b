"""GET /metrics: the traffic obsweb counted, in Prometheus' text exposition format.

Prometheus scrapes without a session, so a bearer token (settings.OBSWEB_METRICS_TOKEN) opens it;
a staff session does too, for a look from the browser. Without a configured token only the
staff session does. 401 without credentials or with a wrong token, 403 for a session not staff.
"""

import hmac

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from obsweb.telemetry.prometheus import TrafficCollector


def _bearer_token(request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _refusal(request) -> HttpResponse | None:
    """The 401 or 403 answer for a request that may not read /metrics, None for one that may."""
    offered, expected = _bearer_token(request), settings.OBSWEB_METRICS_TOKEN
    if offered is not None:
        # compare_digest: the time taken must not tell how much of a guess was right.
        if expected and hmac.compare_digest(offered.encode(), expected.encode()):
            return None
        return _unauthorized("wrong bearer token" if expected else "no OBSWEB_METRICS_TOKEN is configured")
    if not request.user.is_authenticated:
        return _unauthorized("send Authorization: Bearer <OBSWEB_METRICS_TOKEN>, or log in as staff")
    if not request.user.is_staff:
        return HttpResponse("only staff may read /metrics\n", status=403, content_type="text/plain")
    return None


def _unauthorized(message: str) -> HttpResponse:
    response = HttpResponse(message + "\n", status=401, content_type="text/plain")
    response["WWW-Authenticate"] = 'Bearer realm="obsweb metrics"'
    return response


@never_cache
@require_safe
def metrics(request):
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    # A registry of its own: the process-wide default one holds Python's process metrics, which
    # say nothing about the traffic and differ between the web processes behind one address.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TrafficCollector())
    # Text format 0.0.4, which every Prometheus reads (the client's default now says 1.0.0, which
    # only differs for names outside [a-zA-Z0-9_:], and ours are all inside).
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)
