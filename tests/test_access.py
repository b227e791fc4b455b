"""Who may do what on every route (SECURITY.md: Access model), table-driven.

Every URL pattern of the project is walked (get_resolver, recursively), so a new route without a
rule here fails test_every_route_has_a_rule. Each rule says, per persona, what GET and each write
method the view accepts must answer; write methods a view does not accept must be refused (405,
or the login redirect / 401 before that). Websockets and CSRF are at the end.

Personas: anonymous; a deactivated account (logged in, then switched off: its session and token
stop working at once); viewer (any active account: obsweb has no role below viewer, so a logged-
in user with no role IS a viewer), by session and, on the API, by token; staff; and a superuser
for the admin, whose model pages also need model permissions.
"""

import json
import re
from dataclasses import dataclass, field

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.authtoken.models import Token

from obsweb.asgi import application
from obsweb.dashboard.consumers import CLOSE_UNAUTHENTICATED
from obsweb.dashboard.routing import websocket_urlpatterns
from obsweb.fleet.models import AuditEntry, Host, RedactionPolicy
from obsweb.incidents import constants as c
from obsweb.incidents.models import AlertRule, Incident, Report, ReportFile
from obsweb.incidents.tasks.build_report import build_report
from obsweb.telemetry.aggregate import apply_records
from obsweb.telemetry.models import Endpoint, RequestSample, Service
from tests import factories
from tests.incidents import IN_MEMORY_LAYER

LOGIN = "login"  # 302 to settings.LOGIN_URL
ADMIN_LOGIN = "admin-login"  # 302 to the admin's login page
WRITES = ("POST", "PUT", "PATCH", "DELETE")
PERSONAS = ("anonymous", "deactivated", "viewer", "staff")


@dataclass(frozen=True)
class Rule:
    """What one route answers: `get` and each accepted write method map persona -> outcome (a
    status code, LOGIN or ADMIN_LOGIN); `bodies` are the staff's write bodies."""

    get: dict | None
    writes: dict = field(default_factory=dict)
    bodies: dict = field(default_factory=dict)
    api: bool = False  # JSON bodies, and the viewer's token is tried too
    # Django's own views (auth, admin) and the favicon answer undeclared methods their own way.
    check_undeclared: bool = True


def page(staff_only=False):
    viewer = 403 if staff_only else 200
    return {"anonymous": LOGIN, "deactivated": LOGIN, "viewer": viewer, "staff": 200}


def form_write(staff_status):
    return {"anonymous": LOGIN, "deactivated": LOGIN, "viewer": 403, "staff": staff_status}


def api_read():
    return {"anonymous": 401, "deactivated": 401, "viewer": 200, "staff": 200}


def api_write(staff_status):
    return {"anonymous": 401, "deactivated": 401, "viewer": 403, "staff": staff_status}


def everyone(status):
    return dict.fromkeys(PERSONAS, status)


RULE_BODY = {
    "name": "access test rule",
    "metric": c.ERROR_RATE,
    "window_minutes": 5,
    "threshold": 5,
    "min_requests": 10,
    "status_codes": "",
    "baseline": c.BASELINE_HOUR,
    "enabled": True,
}
RULE_FORM = RULE_BODY | {"enabled": "on", "service": "", "host": ""}

RULES = {
    # Public by design ----------------------------------------------------------------------------
    "favicon.ico": Rule(get=everyone(204), check_undeclared=False),
    "healthz": Rule(get=everyone(200)),  # load balancers, no credentials
    # Prometheus: a bearer token (test_metrics_endpoint.py) or a staff session.
    "metrics": Rule(get={"anonymous": 401, "deactivated": 401, "viewer": 403, "staff": 200}),
    "accounts/login/": Rule(get=everyone(200), check_undeclared=False),
    # POST only; back to the login page.
    "accounts/logout/": Rule(get=everyone(405), writes={"POST": everyone(LOGIN)}, check_undeclared=False),
    "accounts/password_change/": Rule(get=page(), check_undeclared=False),
    "accounts/password_change/done/": Rule(get=page(), check_undeclared=False),
    # No e-mail is configured, and accounts have no addresses: a reset request sends nothing, and
    # answers the same whether the address exists (no account enumeration).
    "accounts/password_reset/": Rule(
        get=everyone(200),
        writes={"POST": everyone(302)},
        bodies={"POST": {"email": "nobody@example.com"}},
        check_undeclared=False,
    ),
    "accounts/password_reset/done/": Rule(get=everyone(200), check_undeclared=False),
    "accounts/reset/<uidb64>/<token>/": Rule(get=everyone(200), check_undeclared=False),  # bad token
    "accounts/reset/done/": Rule(get=everyone(200), check_undeclared=False),
    # JSON API ------------------------------------------------------------------------------------
    "api/v1/services": Rule(get=api_read(), api=True),
    "api/v1/services/<captured:name>/endpoints": Rule(get=api_read(), api=True),
    "api/v1/services/<captured:name>/resources": Rule(get=api_read(), api=True),
    "api/v1/edges": Rule(get=api_read(), api=True),
    "api/v1/resources": Rule(get=api_read(), api=True),
    "api/v1/requests": Rule(get=api_read(), api=True),
    "api/v1/traces/<captured:trace_id>": Rule(get=api_read(), api=True),
    "api/v1/hosts": Rule(get=api_read(), api=True),
    "api/v1/hosts/<captured:name>/probes": Rule(
        get=None, writes={"PATCH": api_write(200)}, bodies={"PATCH": {"http": False}}, api=True
    ),
    "api/v1/hosts/<captured:name>": Rule(
        get=api_read(),
        writes={"PATCH": api_write(200)},
        bodies={"PATCH": {"cpu_budget_percent": 10}},
        api=True,
    ),
    "api/v1/incidents": Rule(get=api_read(), api=True),
    "api/v1/incidents/<int:incident_id>": Rule(get=api_read(), api=True),
    "api/v1/incidents/<int:incident_id>/acknowledge": Rule(
        get=None, writes={"POST": api_write(200)}, api=True
    ),
    "api/v1/incidents/<int:incident_id>/comments": Rule(
        get=None, writes={"POST": api_write(201)}, bodies={"POST": {"text": "looked"}}, api=True
    ),
    "api/v1/incidents/<int:incident_id>/reports": Rule(get=None, writes={"POST": api_write(202)}, api=True),
    "api/v1/reports/<int:report_id>": Rule(get=api_read(), api=True),
    "api/v1/reports/<int:report_id>/<str:fmt>": Rule(get=api_read(), api=True),
    "api/v1/alert-rules": Rule(
        get=api_read(), writes={"POST": api_write(201)}, bodies={"POST": RULE_BODY}, api=True
    ),
    "api/v1/alert-rules/<int:rule_id>": Rule(
        get=api_read(),
        writes={"PATCH": api_write(200), "DELETE": api_write(204)},
        bodies={"PATCH": {"enabled": False}},
        api=True,
    ),
    "api/schema/": Rule(get=api_read(), api=True),
    # Incident pages --------------------------------------------------------------------------------
    "incidents/": Rule(get=page()),
    "incidents/rules/": Rule(get=page()),
    "incidents/rules/new/": Rule(
        get=page(staff_only=True), writes={"POST": form_write(302)}, bodies={"POST": RULE_FORM}
    ),
    "incidents/rules/<int:rule_id>/": Rule(
        get=page(staff_only=True), writes={"POST": form_write(302)}, bodies={"POST": RULE_FORM}
    ),
    "incidents/rules/<int:rule_id>/delete/": Rule(get=None, writes={"POST": form_write(302)}),
    "incidents/<int:incident_id>/": Rule(get=page()),
    "incidents/<int:incident_id>/acknowledge/": Rule(get=None, writes={"POST": form_write(302)}),
    "incidents/<int:incident_id>/comments/": Rule(
        get=None, writes={"POST": form_write(302)}, bodies={"POST": {"text": "looked"}}
    ),
    "incidents/<int:incident_id>/reports/": Rule(get=None, writes={"POST": form_write(302)}),
    "incidents/<int:incident_id>/reports/rows/": Rule(get=page()),
    # Dashboard -------------------------------------------------------------------------------------
    "": Rule(get=page()),
    "map/": Rule(get=page()),
    "services/<captured:name>/paths/<int:endpoint_id>/": Rule(get=page()),
    "services/<captured:name>/series.json": Rule(get=page()),
    "services/<captured:name>/": Rule(get=page()),
    "traces/<captured:trace_id>/": Rule(get=page()),
    "resources/": Rule(get=page()),
    "hosts/": Rule(get=page()),
    "hosts/rows/": Rule(get=page()),
    "hosts/probes/": Rule(
        get=None,
        writes={"POST": form_write(302)},
        bodies={"POST": {"host": "web-1", "probe": "http", "enabled": "0"}},
    ),
    "hosts/probes/all/": Rule(
        get=None, writes={"POST": form_write(302)}, bodies={"POST": {"probe": "http", "enabled": "0"}}
    ),
    "hosts/budget/": Rule(
        get=None,
        writes={"POST": form_write(302)},
        bodies={"POST": {"host": "web-1", "cpu_budget_percent": "10"}},
    ),
    "hosts/audit/": Rule(get=page(staff_only=True)),
    "hosts/audit.csv": Rule(get=page(staff_only=True)),
    "hosts/redaction/": Rule(
        get=page(),
        writes={"POST": form_write(302)},
        bodies={"POST": {"headers_kept": "x-request-id", "query_keys_kept": "", "sql_literals": "mask"}},
    ),
}


# --- the routes ----------


def walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            assert isinstance(pattern, URLPattern)
            yield prefix + str(pattern.pattern)


ROUTES = list(walk(get_resolver().url_patterns))
ADMIN_ROUTES = [r for r in ROUTES if r.startswith("admin/")]
# The admin's own answers for a superuser where a page is not a plain 200.
ADMIN_SUPERUSER = {
    "admin/logout/": 405,  # POST only
    "admin/autocomplete/": 403,  # needs app_label, model_name and field_name
    "admin/r/<path:content_type_id>/<path:object_id>/": 404,  # hosts have no page of their own there
    "admin/(?P<url>.*)$": 404,
    "admin/login/": 302,  # logged in already: on to the index
    # Read-only in the admin for everyone: hosts come from heartbeats, incidents from rules, and
    # the audit log and the one redaction policy are never added or deleted by hand.
    "admin/fleet/host/add/": 403,
    "admin/fleet/auditentry/add/": 403,
    "admin/fleet/auditentry/<path:object_id>/delete/": 403,
    "admin/fleet/redactionpolicy/add/": 403,
    "admin/fleet/redactionpolicy/<path:object_id>/delete/": 403,
    "admin/incidents/incident/add/": 403,
}


def test_every_route_has_a_rule():
    missing = [r for r in ROUTES if r not in RULES and not r.startswith("admin/")]
    assert not missing, f"routes without an access rule in tests/test_access.py: {missing}"
    assert not RULES.keys() - set(ROUTES), "rules for routes that no longer exist"


def test_the_table_names_every_write_method_an_api_view_has():
    """A DRF view's write handlers are exactly the rule's writes, so a new PUT gets a rule too."""
    resolver = get_resolver()
    for route, rule in RULES.items():
        if not rule.api:
            continue
        view = resolver.resolve("/" + fill(route, SAMPLE_OBJECTS)).func
        handlers = {m.upper() for m in WRITES if hasattr(view.view_class, m.lower())}
        assert handlers == set(rule.writes), route


# --- objects every route needs ----------

SAMPLE_OBJECTS = {
    "service": "shop-api",
    "host": "web-1",
    "endpoint": 1,
    "trace": factories.request()["trace_id"],
    "incident": 1,
    "report": 1,
    "rule": 1,
}


def fill(route: str, objects: dict) -> str:
    """The route with each parameter replaced by an existing object's name or id."""
    by_parameter = {
        "trace_id": objects["trace"],
        "incident_id": objects["incident"],
        "report_id": objects["report"],
        "rule_id": objects["rule"],
        "endpoint_id": objects["endpoint"],
        "fmt": "json",
        "uidb64": "MQ",
        "token": "bad-token",
        "name": objects["host"] if route.startswith(("api/v1/hosts", "hosts/")) else objects["service"],
    }
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(by_parameter[m.group(1)]), route)


@pytest.fixture
def objects(db, settings, control_redis, monkeypatch):
    """A service with an endpoint and a sampled request (its trace id), a host, an incident with a
    finished report, an alert rule and an audit entry; control changes go to the test Redis."""
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.INCIDENT_WEBHOOK_URL = ""
    monkeypatch.setattr(build_report, "delay", lambda report_id: None)  # no Celery here
    apply_records([factories.request(ts=factories.now_ns(5))])
    service = Service.objects.get(name="shop-api")
    sample = RequestSample.objects.get()
    host = Host.objects.create(name="web-1")
    now = timezone.now()
    incident = Incident.objects.create(
        subject_kind=c.SUBJECT_SERVICE,
        subject=service.name,
        service=service,
        opened_at=now,
        last_firing_at=now,
    )
    report = Report.objects.create(incident=incident, status=c.DONE, progress=100)
    ReportFile.objects.create(report=report, format="json", content=b"{}", size=2)
    rule = AlertRule.objects.create(**RULE_BODY | {"name": "existing rule"})
    AuditEntry.objects.create(host=host, actor="staff", setting="probe", probe="http", old="on", new="off")
    RedactionPolicy.objects.get_or_create(pk=1)
    Group.objects.create(name="operators")
    return {
        "service": service.name,
        "host": host.name,
        "endpoint": Endpoint.objects.get(service=service).pk,
        "trace": sample.trace_id,
        "incident": incident.pk,
        "report": report.pk,
        "rule": rule.pk,
    }


def client_for(persona: str, how: str = "session") -> Client:
    client = Client()
    if persona == "anonymous":
        return client
    user = User.objects.create_user(
        persona,
        password="pass",
        is_staff=persona in ("staff", "superuser"),
        is_superuser=persona == "superuser",
    )
    if how == "token":
        token = Token.objects.create(user=user)
        client.defaults["HTTP_AUTHORIZATION"] = f"Token {token.key}"
    else:
        client.force_login(user)
    if persona == "deactivated":
        User.objects.filter(pk=user.pk).update(is_active=False)
    return client


def send(client: Client, method: str, path: str, body, api: bool):
    if api:
        data = json.dumps(body) if body is not None else ""
        return client.generic(method, path, data, content_type="application/json")
    if method == "POST":
        return client.post(path, body or {})
    return client.generic(method, path)


def outcome(response):
    if response.status_code == 302:
        location = response["Location"]
        if location.startswith(django_settings.LOGIN_URL):
            return LOGIN
        if location.startswith("/admin/login/"):
            return ADMIN_LOGIN
    return response.status_code


# --- the cases ----------


def cases():
    for route, rule in RULES.items():
        hows = ("session", "token") if rule.api else ("session",)
        for method, expected in ([("GET", rule.get)] if rule.get else []) + list(rule.writes.items()):
            for persona in PERSONAS:
                for how in hows if persona in ("viewer", "deactivated") else ("session",):
                    yield pytest.param(
                        route,
                        method,
                        persona,
                        how,
                        expected[persona],
                        id=f"{method} /{route} {persona} {how}",
                    )


@pytest.mark.parametrize(("route", "method", "persona", "how", "expected"), list(cases()))
def test_route_access(objects, route, method, persona, how, expected):
    rule = RULES[route]
    client = client_for(persona, how)

    response = send(client, method, "/" + fill(route, objects), rule.bodies.get(method), rule.api)

    assert outcome(response) == expected, response.content[:300]


def undeclared_cases():
    for route, rule in RULES.items():
        if not rule.check_undeclared:
            continue
        methods = [m for m in WRITES if m not in rule.writes] + ([] if rule.get else ["GET"])
        for method in methods:
            for persona in ("anonymous", "viewer", "staff"):
                yield pytest.param(route, method, persona, id=f"{method} /{route} {persona}")


@pytest.mark.parametrize(("route", "method", "persona"), list(undeclared_cases()))
def test_methods_a_route_does_not_take_are_refused(objects, route, method, persona):
    rule = RULES[route]
    response = send(client_for(persona), method, "/" + fill(route, objects), None, rule.api)

    refused = {"anonymous": {LOGIN, 401, 405}, "viewer": {403, 405}, "staff": {405}}[persona]
    assert outcome(response) in refused, response.content[:300]


# --- the admin: staff only ----------


def admin_path(route: str, objects: dict) -> str:
    """An admin route with an existing object of its model in it."""
    if route == "admin/(?P<url>.*)$":
        return "/admin/nothing-here/"
    if route.startswith("admin/^(?P<app_label>"):
        return "/admin/fleet/"
    if route == "admin/r/<path:content_type_id>/<path:object_id>/":
        from django.contrib.contenttypes.models import ContentType

        return f"/admin/r/{ContentType.objects.get_for_model(Host).pk}/{Host.objects.get(name='web-1').pk}/"
    match = re.match(r"admin/(\w+)/(\w+)/", route)
    if match and "<" in route:
        model = next(
            m for m in admin.site._registry if (m._meta.app_label, m._meta.model_name) == match.groups()
        )
        pk = model.objects.order_by("pk").first().pk
        return "/" + re.sub(r"<(?:\w+:)?\w+>", str(pk), route)
    return "/" + route


@pytest.mark.parametrize("route", ADMIN_ROUTES)
@pytest.mark.parametrize("persona", ["anonymous", "deactivated", "viewer"])
def test_the_admin_sends_everyone_but_staff_to_its_login(objects, route, persona):
    Token.objects.create(user=User.objects.create_user("token-owner"))  # an object for the token pages
    client = client_for(persona)
    path = admin_path(route, objects)

    if route in ("admin/login/", "admin/logout/"):
        assert client.get(path).status_code in (200, 302, 405)  # the login form, or back to it
        return
    assert outcome(client.get(path)) == ADMIN_LOGIN
    assert outcome(client.post(path, {"name": "x"})) == ADMIN_LOGIN


@pytest.mark.parametrize("route", ADMIN_ROUTES)
def test_superusers_use_every_admin_page(objects, route):
    Token.objects.create(user=User.objects.create_user("token-owner"))
    client = client_for("superuser")
    response = client.get(admin_path(route, objects))

    expected = ADMIN_SUPERUSER.get(route, 302 if route.endswith("<path:object_id>/") else 200)
    assert response.status_code == expected, response.content[:300]


def test_staff_without_model_permissions_see_the_admin_but_no_model(objects):
    client = client_for("staff")
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/fleet/host/").status_code == 403


# --- CSRF: forms and session writes without a token are refused ----------


def csrf_cases():
    for route, rule in RULES.items():
        for method in rule.writes:
            if route not in ("accounts/logout/", "accounts/password_reset/"):
                yield pytest.param(route, method, id=f"{method} /{route}")


@pytest.mark.parametrize(("route", "method"), list(csrf_cases()))
def test_staff_writes_without_a_csrf_token_are_refused(objects, route, method):
    rule = RULES[route]
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_user("staff", is_staff=True))

    response = send(client, method, "/" + fill(route, objects), rule.bodies.get(method), rule.api)

    assert response.status_code == 403
    assert b"CSRF" in response.content


def test_a_staff_form_with_its_csrf_token_goes_through(objects):
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_user("staff", is_staff=True))
    client.get("/hosts/")  # sets the CSRF cookie
    token = client.cookies[django_settings.CSRF_COOKIE_NAME].value

    response = client.post(
        "/hosts/probes/", {"host": "web-1", "probe": "http", "enabled": "0", "csrfmiddlewaretoken": token}
    )

    assert outcome(response) == 302 and not Host.objects.get(name="web-1").wants("http")


def test_the_api_takes_token_writes_without_csrf(objects):
    client = Client(enforce_csrf_checks=True)
    user = User.objects.create_user("staff", is_staff=True)
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {Token.objects.create(user=user).key}"

    response = send(client, "PATCH", "/api/v1/hosts/web-1/probes", {"http": False}, api=True)

    assert response.status_code == 200


def test_the_login_form_needs_its_csrf_token(db):
    User.objects.create_user("viewer", password="viewer-pass")
    client = Client(enforce_csrf_checks=True)

    response = client.post("/accounts/login/", {"username": "viewer", "password": "viewer-pass"})

    assert response.status_code == 403 and "_auth_user_id" not in client.session


# --- websockets ----------

SOCKET_PATHS = ["/" + str(p.pattern) for p in websocket_urlpatterns]


def socket_outcome(path: str, origin: bytes | None, session_key: str | None = None):
    """(accepted, the close code when closed at once, else None)."""
    headers = [(b"host", b"127.0.0.1")]
    if origin is not None:
        headers.append((b"origin", origin))
    if session_key:
        headers.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={session_key}".encode()))

    async def scenario():
        socket = WebsocketCommunicator(application, path, headers=headers)
        connected, _ = await socket.connect(timeout=5)
        if not connected:
            return False, None
        if await socket.receive_nothing(timeout=0.3):
            await socket.disconnect()
            return True, None
        closed = await socket.receive_output(timeout=1)
        await socket.wait()
        return True, closed.get("code")

    return async_to_sync(scenario)()


def session_key_of(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


@pytest.fixture
def socket_settings(settings):
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_every_socket_route_is_listed():
    assert len(SOCKET_PATHS) == len(websocket_urlpatterns) >= 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", SOCKET_PATHS)
def test_sockets_close_anonymous_visitors_with_4401(socket_settings, path):
    assert socket_outcome(path, b"http://127.0.0.1") == (True, CLOSE_UNAUTHENTICATED)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", SOCKET_PATHS)
def test_sockets_close_deactivated_accounts_with_4401(socket_settings, path):
    user = User.objects.create_user("gone")
    key = session_key_of(user)
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert socket_outcome(path, b"http://127.0.0.1", key) == (True, CLOSE_UNAUTHENTICATED)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", SOCKET_PATHS)
def test_sockets_accept_viewers(socket_settings, path):
    key = session_key_of(User.objects.create_user("viewer"))
    assert socket_outcome(path, b"http://127.0.0.1", key) == (True, None)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", SOCKET_PATHS)
@pytest.mark.parametrize("origin", [b"http://evil.example", b"http://127.0.0.1.evil.example", None])
def test_sockets_refuse_other_origins_even_for_viewers(socket_settings, path, origin):
    key = session_key_of(User.objects.create_user("viewer"))
    assert socket_outcome(path, origin, key) == (False, None)
