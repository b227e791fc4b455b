"""Request targets to routes (probes/routes.py)."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.protocols.http1 import read_request_head
from probes.routes import MAX_ROUTE_CHARS, looks_like_id, normalize_route

CAPTURES = Path(__file__).resolve().parent.parent / "captures" / "http"

ROUTES = [
    ("/users/123", "/users/{id}"),
    ("/users/123?expand=orders#top", "/users/{id}"),
    ("/orders/550e8400-e29b-41d4-a716-446655440000/items", "/orders/{id}/items"),
    ("/orders/550E8400-E29B-41D4-A716-446655440000", "/orders/{id}"),
    ("/blob/deadbeef42", "/blob/{id}"),
    ("/blob/deadbeef", "/blob/deadbeef"),  # a word in hex letters, no digit
    ("/commits/3f9a1c7", "/commits/3f9a1c7"),  # 7 hex chars: too short to be sure
    ("/reset/aB3dE5fG7hI9jK1lM3nO5", "/reset/{id}"),
    ("/docs/getting-started-with-obsweb", "/docs/getting-started-with-obsweb"),
    ("/files/report_2024_final_version", "/files/{id}"),  # 20+ token chars mixing letters and digits
    ("/api/v2/users", "/api/v2/users"),
    ("/static/app.js", "/static/app.js"),
    ("/static/jquery-3.7.1.min.js", "/static/jquery-3.7.1.min.js"),
    ("//a///b//", "/a/b/"),
    ("/users/", "/users/"),
    ("/", "/"),
    ("", "/"),
    ("?only=query", "/"),
    ("*", "*"),
    ("http://example.com/users/42?x=1", "/users/{id}"),
    ("https://user:secret@example.com:8443/a/b", "/a/b"),
    ("http://example.com", "/"),
    ("/a/b/c/d/e/f/g/h", "/a/b/c/d/e/f/g/h"),
    ("/a/b/c/d/e/f/g/h/i/j", "/a/b/c/d/e/f/g/h/{rest}"),
    ("/" + "x" * 300, "/" + "x" * 192 + "/{rest}"),
    (
        "/" + "/".join(["abcdefghijklmnopqrstuvwxy"] * 8),
        "/" + "/".join(["abcdefghijklmnopqrstuvwxy"] * 7) + "/{rest}",
    ),
]


@pytest.mark.parametrize("target, route", ROUTES)
def test_it_normalizes_targets_to_routes(target, route):
    assert normalize_route(target) == route


@pytest.mark.parametrize(
    "capture, route",
    [
        ("curl_get.bin", "/api/users/{id}"),
        ("python_get.bin", "/orders/{id}/items"),
        ("python_post.bin", "/api/v2/events"),
        ("chromium_get.bin", "/page"),
        ("curl_put_chunked.bin", "/upload/report.csv"),
    ],
)
def test_it_normalizes_the_targets_of_captured_requests(capture, route):
    head = read_request_head((CAPTURES / capture).read_bytes()[:512])
    assert normalize_route(head.target) == route


@pytest.mark.parametrize("segment", ["0", "42", "12345678", "DEADBEEF01", "a1b2c3d4", "Zx9_Zx9-Zx9_Zx9-Zx9_"])
def test_it_knows_an_id_when_it_sees_one(segment):
    assert looks_like_id(segment)


@pytest.mark.parametrize(
    "segment", ["users", "v2", "deadbeef", "abc123", "app.js", "", "1.5", "aaaaaaaaaaaaaaaaaaaaaaaa"]
)
def test_it_knows_a_name_when_it_sees_one(segment):
    assert not looks_like_id(segment)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=600) | st.lists(st.text(alphabet="ab1/-_?", max_size=40), max_size=30).map("/".join))
def test_a_route_is_always_short_and_starts_with_a_slash(target):
    route = normalize_route(target)
    assert route == "*" or route.startswith("/")
    assert len(route) <= MAX_ROUTE_CHARS
    assert "?" not in route and "#" not in route
    assert route.count("/") <= 10


def test_it_survives_what_is_not_text():
    assert normalize_route(None) == "/"
