"""The whole obsweb stack as real processes on loopback, for end-to-end tests.

Redis, a fresh SQLite database, the ingester, daphne and the probe worker, each a subprocess,
plus helpers to start nginx and the test HTTP backend. Everything is stopped on exit.
"""

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.helpers import REPO, free_port, redis_server, stop, wait_for_port

PYTHON = sys.executable
CREATE_USERS = (
    "from django.contrib.auth.models import User\n"
    "User.objects.create_user('e2e', password='e2e-pass')\n"
    "User.objects.create_user('e2e-staff', password='e2e-staff-pass', is_staff=True)\n"
)
NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 4; }}
    server {{
        listen 127.0.0.1:{port}{tls};
        {certificates}
        location /static/ {{ alias {tmp}/www/; }}
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@dataclass
class Stack:
    tmp: Path
    redis_url: str
    env: dict
    web_port: int = 0
    metrics_port: int = 0
    health_port: int = 0
    token: str = ""  # a viewer's
    staff_token: str = ""
    host_name: str = "e2e-host"
    procs: list = field(default_factory=list)
    named: dict = field(default_factory=dict)  # name given to spawn() -> process

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def spawn(self, name: str, args: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "wb")
        proc = subprocess.Popen(args, cwd=REPO, env=env or self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.named[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def api(self, path: str, **params) -> dict:
        response = requests.get(
            f"{self.web}{path}", params=params, headers={"Authorization": f"Token {self.token}"}, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def endpoints(self, service: str) -> list[dict]:
        """The service's endpoints, or none while the service has not been seen yet (404)."""
        response = requests.get(
            f"{self.web}/api/v1/services/{service}/endpoints",
            headers={"Authorization": f"Token {self.token}"},
            timeout=10,
        )
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return response.json()["endpoints"]

    def viewer_session(self) -> requests.Session:
        """A browser-like session logged in as the viewer, for the dashboard's pages."""
        session = requests.Session()
        session.get(f"{self.web}/accounts/login/", timeout=10)
        answer = session.post(
            f"{self.web}/accounts/login/",
            data={
                "username": "e2e",
                "password": "e2e-pass",
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
            },
            headers={"Referer": f"{self.web}/accounts/login/"},
            timeout=10,
            allow_redirects=False,  # a refused login answers 200 with the form again
        )
        assert answer.status_code == 302, answer.text[:500]
        return session

    def worker_health(self) -> dict:
        return requests.get(f"http://127.0.0.1:{self.health_port}/healthz", timeout=5).json()

    def worker_metrics(self) -> str:
        return requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def start_worker(
        self, host_name: str | None = None, cgroup: Path | None = None, extra_args: tuple[str, ...] = ()
    ) -> subprocess.Popen:
        """A probe worker reporting as `host_name` (the stack's host by default), watching only
        `cgroup` when given, with `extra_args` for `python -m probes`; returns once every probe
        it runs is attached (or reports why not): traffic sent before that would be missed."""
        host_name = host_name or self.host_name
        metrics_port, health_port = free_port(), free_port()
        if host_name == self.host_name:
            self.metrics_port, self.health_port = metrics_port, health_port
        args = [PYTHON, "-m", "probes", "--redis-url", self.redis_url, "--host-name", host_name]
        args += ["--metrics-port", str(metrics_port), "--health-port", str(health_port)]
        if cgroup is not None:
            args += ["--cgroup", str(cgroup)]
        args += extra_args
        name = "worker" if host_name == self.host_name else f"worker-{host_name}"
        proc = self.spawn(name, args)
        wait_for_port(health_port, timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            probes = requests.get(f"http://127.0.0.1:{health_port}/healthz", timeout=5).json()["probes"]
            if all(state["actual"] or state["error"] or not state["desired"] for state in probes.values()):
                return proc
            if probes["http"]["error"]:  # the socket program serves http: its error is the program's
                raise RuntimeError(f"worker {host_name} could not attach: {probes['http']['error']}")
            time.sleep(0.2)
        raise TimeoutError(f"worker {host_name} did not attach its BPF programs in 60 s:\n" + self.log(name))

    def patch(self, path: str, body: dict, token: str | None = None) -> requests.Response:
        return requests.patch(
            f"{self.web}{path}",
            json=body,
            headers={"Authorization": f"Token {token or self.staff_token}"},
            timeout=10,
        )


@contextlib.contextmanager
def obsweb_stack(with_worker: bool = True):
    with redis_server() as redis_url, tempfile.TemporaryDirectory(prefix="obsweb-e2e-") as tmp_name:
        tmp = Path(tmp_name)
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
            "REDIS_URL": redis_url,
            "SECRET_KEY": "e2e-secret-key-not-for-production",
            "PYTHONUNBUFFERED": "1",
        }
        stack = Stack(tmp=tmp, redis_url=redis_url, env=env)
        try:
            stack.manage("migrate", "--noinput")
            stack.manage("shell", "-c", CREATE_USERS)
            stack.token = stack.manage("apitoken", "e2e").strip()
            stack.staff_token = stack.manage("apitoken", "e2e-staff").strip()
            stack.web_port = free_port()
            stack.spawn("ingest", [PYTHON, "manage.py", "ingest"])
            stack.spawn(
                "web",
                [
                    PYTHON,
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(stack.web_port),
                    "obsweb.asgi:application",
                ],
            )
            wait_for_port(stack.web_port, timeout=30)
            if with_worker:
                stack.start_worker()
            yield stack
        finally:
            for proc in reversed(stack.procs):
                stop(proc)


@contextlib.contextmanager
def http_backend(service_name: str, env: dict | None = None):
    """tests/servers/http_backend.py under OTEL_SERVICE_NAME; yields its port."""
    port = free_port()
    proc = subprocess.Popen(
        [PYTHON, str(REPO / "tests" / "servers" / "http_backend.py"), str(port)],
        env={**(env or os.environ), "OTEL_SERVICE_NAME": service_name},
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        stop(proc)


@contextlib.contextmanager
def nginx_proxy(backend_port: int, tls: bool = False):
    """nginx on a free loopback port proxying to the backend over keep-alive, with a fresh
    self-signed certificate when `tls`; yields its port."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="obsweb-nginx-") as tmp:
        os.chmod(tmp, 0o755)  # nginx workers run as nobody and must reach the static file
        (Path(tmp) / "www").mkdir()
        (Path(tmp) / "www" / "index.html").write_text("<h1>hello</h1>\n")
        certificates = ""
        if tls:
            self_signed = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
            self_signed += ["-subj", "/CN=localhost", "-keyout", f"{tmp}/key.pem", "-out", f"{tmp}/cert.pem"]
            subprocess.run(self_signed, check=True, capture_output=True)
            certificates = f"ssl_certificate {tmp}/cert.pem; ssl_certificate_key {tmp}/key.pem;"
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                tmp=tmp,
                port=port,
                backend_port=backend_port,
                tls=" ssl" if tls else "",
                certificates=certificates,
            )
        )
        proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", tmp, "-g", "daemon off;"])
        try:
            wait_for_port(port)
            yield port
        finally:
            stop(proc)
