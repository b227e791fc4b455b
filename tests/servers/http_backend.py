"""A tiny HTTP/1.1 keep-alive backend for end-to-end tests: known routes, statuses and delays.

    python tests/servers/http_backend.py PORT [ADDRESS]

GET /users/<id> -> 200; GET /slow -> 200 after SLOW_SECONDS; GET /chunked -> 200 in three chunks;
HEAD /users/<id> -> 200 without a body; POST /boom -> 500 (after "100 Continue" when asked);
anything else -> 404.
"""

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_SECONDS = 0.2


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so one connection carries many requests

    def _answer(self, status: int, body: bytes = b"ok\n") -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):
        self.send_response(200 if self.path.startswith("/users/") else 404)
        self.send_header("Content-Length", "20")
        self.end_headers()

    def _chunked(self):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in (b"first ", b"second ", b"third\n"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self):
        if self.path == "/chunked":
            self._chunked()
        elif self.path.startswith("/users/"):
            self._answer(200, b'{"user": "someone"}\n')
        elif self.path == "/slow":
            time.sleep(SLOW_SECONDS)
            self._answer(200)
        else:
            self._answer(404, b"not here\n")

    def do_POST(self):
        self._answer(500 if self.path == "/boom" else 404, b"failed\n")

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    address = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"  # another host's tests listen on a veth
    ThreadingHTTPServer((address, int(sys.argv[1])), Handler).serve_forever()
