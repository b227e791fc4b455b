"""A pre-forking HTTP server the way PostgreSQL's postmaster is one: the parent accepts, forks a
child per connection and closes its copy of the socket; the child answers one request.

    python tests/servers/prefork.py PORT

The parent accepts every connection on the same fd number (it closed the previous one). Who goes
first, the child's read or the parent's close, is set per connection, in pairs: connections 1
and 2 the child reads first (the parent waits for it), 3 and 4 the parent closes first (the
child waits for it), and so on. Both orders happen in real servers, and a second child reading
first is where a probe could hand it the first child's connection.
"""

import os
import signal
import socket
import sys
import time

# A child stays a little after answering: the probe names a process from its environment
# (OTEL_SERVICE_NAME), which is gone with the process.
LINGER_S = 5


def reads_first(number: int) -> bool:
    return number % 4 in (1, 2)


def answer(conn: socket.socket, request: bytes) -> None:
    path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b"/"
    body = b"served " + path + b"\n"
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    conn.close()


def main(port: int) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    for number in range(1, 1_000_000):
        conn, _ = listener.accept()
        started_r, started_w = os.pipe()  # the child tells the parent it read the request
        closed_r, closed_w = os.pipe()  # the parent tells the child it closed its copy
        first = reads_first(number)
        pid = os.fork()
        if pid == 0:
            try:
                listener.close()
                if not first:
                    os.read(closed_r, 1)
                request = conn.recv(65536)
                os.write(started_w, b".")
                if request:  # a readiness check connects and closes without a word
                    answer(conn, request)
                time.sleep(LINGER_S)
            finally:
                os._exit(0)
        if first:
            os.read(started_r, 1)
        conn.close()
        os.write(closed_w, b".")
        for fd in (started_r, started_w, closed_r, closed_w):
            os.close(fd)


if __name__ == "__main__":
    main(int(sys.argv[1]))
