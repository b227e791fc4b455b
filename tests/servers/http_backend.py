"""A tiny HTTP/1.1 keep-alive backend for end-to-end tests: known routes, statuses and delays.

    python tests/servers/http_backend.py PORT

GET /users/<id> -> 200; GET /slow -> 200 after SLOW_SECONDS; POST /boom -> 500; anything else -> 404.
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

    def do_GET(self):
        if self.path.startswith("/users/"):
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
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
