"""Regenerate the real HTTP/1.x captures in tests/captures/http/.

Run by hand, never by the tests (they only read the .bin files):

    python tests/captures/record_http.py [--out DIR]

Requests: a recording server on 127.0.0.1 saves the exact bytes that curl, Python's http.client and
urllib, wrk and headless Chromium send, and answers each with a fixed small page. Responses: a raw
socket sends a fixed request to nginx (temporary config), `python -m http.server` and a tiny chunked
server below, and saves the exact bytes they answer. Everything stays on loopback. Needs curl, wrk,
nginx and chromium on PATH; stdlib only, so it runs with any Python 3.11.

The captures hold fake credentials only (the Authorization and Cookie values below), on purpose:
the tests check that those headers never survive parsing.
"""

import argparse
import http.client
import http.server
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "http"
CLIENT_TIMEOUT_S = 30
MAX_RECORDED = 50  # wrk sends thousands of requests in its one second; the first few are enough

FAKE_AUTHORIZATION = "Bearer fake-token-0123456789abcdef"
FAKE_COOKIE = "sessionid=fake-session-42; theme=dark"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

PAGE = b"<!doctype html><html><head><title>obsweb capture</title></head><body><p>hi</p></body></html>\n"
FIXED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
    b"Content-Length: " + str(len(PAGE)).encode() + b"\r\n\r\n" + PAGE
)
STATIC_FILE = b"hello from nginx\n"
GZIP_FILE = b"".join(b"line %04d of a compressible text file\n" % i for i in range(200))


def read_request(conn: socket.socket, pending: bytes) -> tuple[bytes, bytes]:
    """Read one request off a keep-alive connection: (its exact bytes, bytes read past it).

    Deliberately simpler than probes.protocols.http1 (the code under test must not frame its own
    test data): Content-Length or a chunked body whose last chunk ends in 0 CRLF CRLF.
    """
    buf = pending
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return b"", b""
        buf += data
    head_end = buf.index(b"\r\n\r\n") + 4
    head = buf[:head_end].lower()
    if b"transfer-encoding: chunked" in head:
        while b"\r\n0\r\n\r\n" not in buf[head_end - 2 :]:
            data = conn.recv(65536)
            if not data:
                return buf, b""
            buf += data
        end = buf.index(b"\r\n0\r\n\r\n", head_end - 2) + 7
        return buf[:end], buf[end:]
    length = 0
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(buf) < head_end + length:
        data = conn.recv(65536)
        if not data:
            break
        buf += data
    return buf[: head_end + length], buf[head_end + length :]


class RecordingHandler(socketserver.BaseRequestHandler):
    def handle(self):
        pending = b""
        self.request.settimeout(CLIENT_TIMEOUT_S)
        try:
            while True:
                raw, pending = read_request(self.request, pending)
                if not raw:
                    return
                self.server.record(raw)
                self.request.sendall(FIXED_RESPONSE)
        except OSError:
            return  # clients such as wrk hang up mid-stream when their time is up


class RecordingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.port = self.server_address[1]
        self.requests: list[bytes] = []
        self.lock = threading.Lock()

    def record(self, raw: bytes):
        with self.lock:
            if len(self.requests) < MAX_RECORDED:
                self.requests.append(raw)

    def take(self, path_prefix: bytes) -> bytes:
        """The first recorded request for a path, then forget everything recorded so far."""
        with self.lock:
            found = [
                r
                for r in self.requests
                if r.split(b" ", 2)[1:2] and r.split(b" ", 2)[1].startswith(path_prefix)
            ]
            self.requests.clear()
        if not found:
            raise SystemExit(f"no request for {path_prefix!r} was recorded; is the client installed?")
        return found[0]


class ChunkedHandler(http.server.BaseHTTPRequestHandler):
    """A tiny server that streams its answer in chunks, with a chunk extension and a trailer."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Trailer", "X-Checksum")
        self.end_headers()
        for piece in (b"first chunk\n", b"second, longer chunk of the streamed body\n", b"x" * 300):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"5;note=last\r\ndone\n\r\n")
        self.wfile.write(b"0\r\nX-Checksum: 1234\r\n\r\n")

    def log_message(self, *args):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, what: str):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start listening on 127.0.0.1:{port}")


def exchange(port: int, request: bytes) -> bytes:
    """Send one request with Connection: close and return every byte the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def run(cmd: list[str]):
    result = subprocess.run(cmd, capture_output=True, timeout=CLIENT_TIMEOUT_S + 30)
    if result.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({result.returncode}): {result.stderr.decode(errors='replace')}")


def record_clients(out: Path, tmp: Path):
    server = RecordingServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        run(
            [
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-H",
                f"Authorization: {FAKE_AUTHORIZATION}",
                "-H",
                f"Cookie: {FAKE_COOKIE}",
                f"{base}/api/users/42?fields=name,email&api_key=fake123",
            ]
        )
        save(out, "curl_get.bin", server.take(b"/api/users/"))

        run(
            [
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                '{"item": "book", "qty": 2}',
                f"{base}/api/orders",
            ]
        )
        save(out, "curl_post.bin", server.take(b"/api/orders"))

        # A body of unknown length: curl streams stdin as chunks.
        subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-T", "-", f"{base}/upload/report.csv"],
            input=b"id,value\n1,10\n2,20\n",
            capture_output=True,
            timeout=CLIENT_TIMEOUT_S,
            check=True,
        )
        save(out, "curl_put_chunked.bin", server.take(b"/upload/"))

        urllib.request.urlopen(
            f"{base}/orders/550e8400-e29b-41d4-a716-446655440000/items?limit=10", timeout=10
        ).read()
        save(out, "python_get.bin", server.take(b"/orders/"))

        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request(
            "POST",
            "/api/v2/events",
            body=b'{"event": "click", "x": 10}',
            headers={
                "Content-Type": "application/json",
                "traceparent": TRACEPARENT,
                "X-Api-Key": "fake-api-key-987",
            },
        )
        conn.getresponse().read()
        conn.close()
        save(out, "python_post.bin", server.take(b"/api/v2/events"))

        run(["wrk", "-c1", "-t1", "-d1s", f"{base}/wrk/bench"])
        save(out, "wrk_get.bin", server.take(b"/wrk/"))

        profile = tmp / "chromium-profile"
        run(
            [
                "/usr/bin/chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--dump-dom",
                f"{base}/page?x=1",
            ]
        )
        save(out, "chromium_get.bin", server.take(b"/page"))
    finally:
        server.shutdown()
        server.server_close()


NGINX_CONF = """
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ text/plain txt; }}
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
        gzip on;
        gzip_min_length 1;
        gzip_types text/plain;
    }}
}}
"""


def record_nginx(out: Path, tmp: Path):
    www = tmp / "www"
    www.mkdir()
    (www / "hello.txt").write_bytes(STATIC_FILE)
    (www / "big.txt").write_bytes(GZIP_FILE)
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port))
    proc = subprocess.Popen(["nginx", "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)])
    try:
        wait_for_port(port, "nginx")
        host = f"Host: 127.0.0.1:{port}\r\n".encode()
        # Without Accept-Encoding nginx knows the length; gzip makes it stream the body as chunks.
        get = b"GET /hello.txt HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n"
        save(out, "nginx_200.bin", exchange(port, get))
        save(out, "nginx_404.bin", exchange(port, get.replace(b"/hello.txt", b"/missing")))
        save(out, "nginx_head.bin", exchange(port, get.replace(b"GET ", b"HEAD ")))
        gzip_get = b"GET /big.txt HTTP/1.1\r\n" + host + b"Accept-Encoding: gzip\r\nConnection: close\r\n\r\n"
        save(out, "nginx_chunked_gzip.bin", exchange(port, gzip_get))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def record_python_servers(out: Path, tmp: Path):
    www = tmp / "pywww"
    www.mkdir()
    (www / "hello.txt").write_bytes(b"hello from python -m http.server\n")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(www), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, "python -m http.server")
        req = b"GET /hello.txt HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % port
        save(out, "python_server_200.bin", exchange(port, req))
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    chunked = http.server.HTTPServer(("127.0.0.1", 0), ChunkedHandler)
    threading.Thread(target=chunked.serve_forever, daemon=True).start()
    try:
        port = chunked.server_address[1]
        req = b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % port
        save(out, "python_chunked.bin", exchange(port, req))
    finally:
        chunked.shutdown()
        chunked.server_close()


def save(out: Path, name: str, data: bytes):
    (out / name).write_bytes(data)
    print(f"{name}: {len(data)} bytes")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"where to write (default {DEFAULT_OUT})"
    )
    args = parser.parse_args()
    missing = [tool for tool in ("curl", "wrk", "nginx", "/usr/bin/chromium") if not shutil.which(tool)]
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)}; install them (apt) and run again")
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="obsweb-captures-"))
    # A proxy from the environment would change the bytes, or send them off the machine.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    try:
        record_clients(args.out, tmp)
        record_nginx(args.out, tmp)
        record_python_servers(args.out, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
