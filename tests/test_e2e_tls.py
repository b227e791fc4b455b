"""HTTPS through nginx: the TLS uprobes see the plaintext, each request is counted once (the
ciphertext on the socket is not counted again), and records say `tls`."""

import subprocess

import pytest

from tests.stack import http_backend, nginx_proxy
from tests.test_e2e_pipeline import by_route, wait_until

pytestmark = pytest.mark.bpf


@pytest.fixture(scope="module")
def stack(shared_stack):
    return shared_stack


def curl_https(port: int, path: str) -> str:
    result = subprocess.run(
        ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", f"https://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return result.stdout


def test_curl_https_is_seen_in_plaintext_and_counted_once(stack):
    # Uprobes live on the library file: once any process's libssl.so.3 is hooked (the worker's
    # own Redis client maps it), nginx started later is covered too.
    wait_until(lambda: stack.worker_health()["probes"]["tls"]["actual"], "TLS uprobes attached", stack)
    with http_backend("tls-backend", env=stack.env) as backend, nginx_proxy(backend, tls=True) as port:
        assert [curl_https(port, f"/users/{i}") for i in range(5)] == ["200"] * 5
        assert curl_https(port, "/missing") == "404"
        service = f"nginx:{port}"

        def counted():
            endpoints = stack.endpoints(service)  # [] until the service is first seen
            return by_route(endpoints) if sum(e["requests"] for e in endpoints) >= 6 else None

        routes = wait_until(counted, "6 HTTPS requests on nginx", stack)
        assert routes[("GET", "/users/{id}")]["status_codes"] == {"200": 5}
        assert routes[("GET", "/missing")]["status_codes"] == {"404": 1}
        assert sum(e["requests"] for e in routes.values()) == 6  # the ciphertext added nothing

        samples = stack.api("/api/v1/requests", service=service)["requests"]
        served = [s for s in samples if s["span.kind"] == "server"]  # nginx->backend is plaintext
        assert served and all(s["tls"] for s in served)
        edges = {(e["source"], e["target"], e["protocol"]): e for e in stack.api("/api/v1/edges")["edges"]}
        assert edges[("curl", service, "http")]["requests"] == 6
