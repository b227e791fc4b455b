"""Fuzz the JSON API from its own OpenAPI schema (schemathesis), as staff and as a viewer: no
request makes it answer 5xx, and valid requests get the status, content type and shape the
schema documents.

In process: the WSGI app on the test database, no server and no network. Reproducible: a fixed
number of examples per operation, derandomized. The writes (PATCH hosts and probes, POST reports,
alert rules, comments) change only the test database and the test Redis.
"""

import json

import hypothesis
import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis import checks

from obsweb.incidents import constants as c
from obsweb.incidents import evaluation
from obsweb.incidents.models import AlertRule, Incident, Report, ReportFile
from obsweb.incidents.tasks import build_report
from obsweb.telemetry.aggregate import apply_records
from tests.factories import agent, api_client, client_request, host_resource, now_ns, request, resource
from tests.incidents import IN_MEMORY_LAYER, ensure_default_rules
from tests.seed import seed_service

HOST, SERVICE, TRACE = "h1", "shop-api", request()["trace_id"]  # the factories' defaults

# A valid request must get a documented answer; an invalid one (negative mode) must not crash the
# API and must get a documented status, whatever its content type (Django's own 404 is HTML).
VALID_REQUEST = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
INVALID_REQUEST = [checks.not_a_server_error, checks.status_code_conformance]

# The coverage phase is off: its cases grow with the schema, not with max_examples (hundreds per
# operation with a body; over a minute more on this machine).
CONFIG = schemathesis.config.SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": False}}})
# The schema /api/schema/ serves, built as it builds it: at import, because schemathesis' loader
# from a fixture fails on pytest 9 (test_it_fuzzes_the_schema_the_api_serves checks they match).
# The schema's own operation is left out: drf-spectacular's view, tested in test_api_schema.py.
schema = schemathesis.openapi.from_dict(
    SchemaGenerator().get_schema(request=None, public=True), config=CONFIG
).exclude(path="/api/schema/")
schema.app = WSGIHandler()

FUZZ = hypothesis.settings(
    max_examples=10,
    derandomize=True,
    database=None,
    deadline=None,
    # The seeded database is shared by an operation's examples, as the API shares it.
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)

# The ids and names of the rows `seeded` made, for the path parameters (ids differ per database).
SEEDED: dict[str, object] = {}


@schema.hook
def flatmap_path_parameters(ctx, path_parameters):
    """Half the time the path names a seeded row, so the fuzzer gets past the 404 into the code
    that reads and changes it."""
    if not isinstance(path_parameters, dict):  # a negative case may send none at all
        return st.just(path_parameters)
    seeded = SEEDED | {"name": HOST if ctx.operation.path.startswith("/api/v1/hosts/") else SERVICE}
    known = {name: seeded[name] for name in path_parameters if name in seeded}
    return st.sampled_from([path_parameters, path_parameters | known])


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # personas, fast


@pytest.fixture(autouse=True)
def seeded(fast_passwords, db, settings, monkeypatch, control_redis):
    """A host with a heartbeat, services with traffic, resources and a trace, the default alert
    rules, an open incident and a finished report."""
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYER
    settings.INCIDENT_WEBHOOK_URL = ""
    monkeypatch.setattr(build_report, "delay", lambda report_id: None)  # no broker in this test
    ensure_default_rules()
    ts = now_ns(seconds_ago=60)
    apply_records(
        [agent(ts=now_ns(1)), request(ts=ts), client_request(ts=ts), resource(ts=ts), host_resource(ts=ts)]
    )
    seed_service("checkout", host=HOST, requests=50, errors=10)
    evaluation.evaluate()
    incident = Incident.objects.get()
    report = Report.objects.create(incident=incident, status=c.DONE, progress=100)
    for fmt in c.REPORT_FORMATS:
        ReportFile.objects.create(report=report, format=fmt, content=b"{}", size=2)
    SEEDED.update(
        incident_id=incident.pk,
        report_id=report.pk,
        rule_id=AlertRule.objects.earliest("pk").pk,
        trace_id=TRACE,
    )
    # As Django's test client does: a request's end must not close the test's transaction.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


def call_and_check(case, user):
    token = Token.objects.get_or_create(user=user)[0].key
    invalid = case.meta is not None and case.meta.generation.mode.is_negative
    case.call_and_validate(
        headers={"Authorization": f"Token {token}"}, checks=INVALID_REQUEST if invalid else VALID_REQUEST
    )


# The persona is a parameter, and not just in the name, because it puts the operation into the
# test id too: schemathesis on pytest 9 leaves it out of unparametrized ones (and -n 2 needs it).
@pytest.mark.parametrize("persona", ["staff"])
@schema.parametrize()
@FUZZ
def test_any_request_gets_a_documented_answer(case, persona, personas):
    call_and_check(case, personas[persona])


# Fewer examples: a viewer's reads run the staff's code, and a viewer's writes are refused
# before their body is read.
@pytest.mark.parametrize("persona", ["viewer"])
@schema.parametrize()
@hypothesis.settings(FUZZ, max_examples=3)
def test_any_viewer_request_gets_a_documented_answer(case, persona, personas):
    call_and_check(case, personas[persona])


def test_it_fuzzes_the_schema_the_api_serves(personas):
    served = api_client(personas, "viewer").get("/api/schema/", {"format": "json"})

    assert served.json() == json.loads(json.dumps(schema.raw_schema))
